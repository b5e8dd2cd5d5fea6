//! Tests of the reassembler: order, bounds, expiry, overlaps, reuse, echo fragments.

use super::*;

fn udp6(payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| i as u8).collect();
    let mut packet = Vec::new();
    PacketBuilder::ipv6(
        [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0xfd, 0x69, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        64,
    )
    .udp(5000, 7)
    .write(&mut packet, &payload)
    .unwrap();
    packet
}

#[test]
fn our_ipv6_fragments_reassemble_to_the_original_in_any_order() {
    let whole = udp6(4000);
    let mut fragments = fragment_v6(&whole, 1500, 9).unwrap();
    assert_eq!(fragments.len(), 3);
    assert!(fragments.iter().all(|f| f.len() <= 1500));
    fragments.reverse();
    let mut r = Reassembler::new(Duration::from_secs(10));
    let now = Instant::ZERO;
    assert!(matches!(r.push(now, &fragments[0]), Reassembly::Queued));
    assert!(matches!(r.push(now, &fragments[1]), Reassembly::Queued));
    match r.push(now, &fragments[2]) {
        Reassembly::Complete(packet) => assert_eq!(packet, whole),
        _ => panic!("not reassembled"),
    }
    assert!(r.trains.is_empty());
}

#[test]
fn the_quick_check_never_misses_a_fragment() {
    let whole = udp6(4000);
    for f in fragment_v6(&whole, 1500, 3).unwrap() {
        assert!(may_be_fragment(&f));
    }
    assert!(!may_be_fragment(&udp6(10)));
    let mut v4 = Vec::new();
    PacketBuilder::ipv4([1, 2, 3, 4], [5, 6, 7, 8], 64)
        .udp(1, 2)
        .write(&mut v4, &[0; 8])
        .unwrap();
    assert!(!may_be_fragment(&v4));
    v4[6] |= 0x20; // MF
    assert!(may_be_fragment(&v4));
    let mut r = Reassembler::new(Duration::from_secs(10));
    assert!(
        matches!(r.push(Instant::ZERO, &v4), Reassembly::Invalid(_)),
        "header sum is now wrong"
    );
    v4[6] = 0;
    v4[7] = 1; // offset 8
    assert!(may_be_fragment(&v4));
    assert!(!may_be_fragment(&[]));
}

#[test]
fn whole_packets_pass_and_trains_are_bounded_and_expire() {
    let mut r = Reassembler::new(Duration::from_secs(10));
    assert!(matches!(
        r.push(Instant::ZERO, &udp6(10)),
        Reassembly::Whole
    ));
    for id in 0..(MAX_TRAINS as u32 * 3) {
        let first = fragment_v6(&udp6(3000), 1500, id).unwrap().remove(0);
        assert!(matches!(r.push(Instant::ZERO, &first), Reassembly::Queued));
    }
    assert_eq!(r.trains.len(), MAX_TRAINS);
    let late = fragment_v6(&udp6(3000), 1500, 1_000_000).unwrap().remove(0);
    r.push(Instant::from_secs(11), &late);
    assert_eq!(r.trains.len(), 1, "expired trains must be forgotten");
}

#[test]
fn an_overlap_discards_the_train_and_a_repeat_is_dropped_alone() {
    let whole = udp6(4000);
    let fragments = fragment_v6(&whole, 1500, 5).unwrap();
    let mut r = Reassembler::new(Duration::from_secs(10));
    let now = Instant::ZERO;
    assert!(matches!(r.push(now, &fragments[0]), Reassembly::Queued));
    assert!(matches!(
        r.push(now, &fragments[0]),
        Reassembly::Refused(DropReason::FragmentDuplicate, _)
    ));
    assert_eq!(r.trains.len(), 1, "a repeat keeps the train");
    let mut changed = fragments[0].clone();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    assert!(matches!(
        r.push(now, &changed),
        Reassembly::Refused(DropReason::FragmentOverlap, Verdict::FragmentOverlap)
    ));
    assert!(r.trains.is_empty(), "an overlap discards the train");
    assert_eq!(r.spare.len(), 1, "its buffer is kept for the next");
}

#[test]
fn reassembled_buffers_are_reused() {
    let whole = udp6(4000);
    let mut r = Reassembler::new(Duration::from_secs(10));
    for id in 0..10 {
        let mut done = None;
        for f in fragment_v6(&whole, 1500, id).unwrap() {
            if let Reassembly::Complete(packet) = r.push(Instant::ZERO, &f) {
                done = Some(packet);
            }
        }
        let packet = done.expect("reassembled");
        assert_eq!(packet, whole);
        r.recycle(packet);
    }
    assert!(r.spare.len() <= SPARE_BUFFERS);
    assert!(r.spare.iter().all(|b| b.capacity() >= 4000));
}

#[test]
fn big_echo_request_gets_a_fragmented_reply() {
    let mut request = Vec::new();
    PacketBuilder::ipv6([1; 16], [2; 16], 64)
        .icmpv6_echo_request(7, 1)
        .write(&mut request, &[0xab; 3000])
        .unwrap();
    let mut r = Reassembler::new(Duration::from_secs(10));
    let fragments = r.echo_reply_fragments(&request, 1500).unwrap();
    assert_eq!(fragments.len(), 3);
    let mut whole = None;
    for f in &fragments {
        if let Reassembly::Complete(p) = r.push(Instant::ZERO, f) {
            whole = Some(p);
        }
    }
    let whole = whole.expect("reply reassembles");
    let sliced = SlicedPacket::from_ip(&whole).unwrap();
    let Some(TransportSlice::Icmpv6(icmp)) = sliced.transport else {
        panic!("not icmpv6");
    };
    assert!(matches!(
        icmp.icmp_type(),
        Icmpv6Type::EchoReply(IcmpEchoHeader { id: 7, seq: 1 })
    ));
    assert_eq!(icmp.payload(), &[0xab; 3000][..]);
    assert!(
        r.echo_reply_fragments(&udp6(3000), 1500).is_none(),
        "only echo requests"
    );
}

#[test]
fn ipv4_fragments_reassemble_with_a_header_checksum_that_verifies() {
    let mut whole = Vec::new();
    PacketBuilder::ipv4([192, 168, 69, 1], [192, 168, 69, 2], 64)
        .udp(5000, 7)
        .write(&mut whole, &[0x42; 40])
        .unwrap();
    let piece = |offset: usize, data: &[u8], more: bool| {
        let mut h = Ipv4Header::from_slice(&whole).unwrap().0;
        h.more_fragments = more;
        h.fragment_offset = IpFragOffset::try_new((offset / 8) as u16).unwrap();
        h.set_payload_len(data.len()).unwrap();
        let mut out = Vec::new();
        h.write(&mut out).unwrap();
        out.extend_from_slice(data);
        out
    };
    let mut r = Reassembler::new(Duration::from_secs(10));
    let first = piece(0, &whole[20..44], true);
    assert!(matches!(r.push(Instant::ZERO, &first), Reassembly::Queued));
    let Reassembly::Complete(packet) = r.push(Instant::ZERO, &piece(24, &whole[44..], false))
    else {
        panic!("not reassembled");
    };
    assert_eq!(packet, whole);
}
