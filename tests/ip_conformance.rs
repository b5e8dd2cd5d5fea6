//! IP and ICMP as a host must do them (RFC 1122, RFC 8200, RFC 4443, RFC 5722, RFC 6946):
//! one test per rule, on the in-memory link, with exact packets in and out and the trace's
//! verdict on each. Where the RFCs leave a choice, the stack does what Linux does.

mod ip;

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::icmpv6::{DestUnreachableCode, ParameterProblemCode};
use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, TcpHeader};
use ip::*;
use tunstack::smoltcp::time::{Duration, Instant};
use tunstack::stats::DropReason;
use tunstack::{Error, StackConfig, UdpSocket};

// ---------------------------------------------------------------- TTL

#[test]
fn rfc1122_3_2_1_7_echo_with_ttl_0_is_answered() {
    let mut host = Host::new();
    let replies = host.send(echo_request4(0, 1, b"ttl zero"));
    assert_eq!(replies, [echo_reply4(PEER4, 1, b"ttl zero")]);
    let replies = host.send(echo_request6(0, 2, b"hop limit zero"));
    assert_eq!(replies, [echo_reply6(2, b"hop limit zero")]);
    let mut syn = Vec::new();
    PacketBuilder::ipv4(PEER4, US4, 0)
        .tcp(40000, 7, 1000, 64240)
        .syn()
        .write(&mut syn, &[])
        .unwrap();
    assert_eq!(host.send(syn).len(), 1, "a SYN with TTL 0 gets its SYN-ACK");
    assert_eq!(host.verdicts()[..2], ["icmp -> stack", "icmp -> stack"]);
    assert_eq!(host.stack.stats().total_drops(), 0);
}

// ---------------------------------------------------------------- fragments

#[test]
fn rfc6946_4_atomic_fragment_is_processed_as_a_whole_datagram() {
    let mut host = Host::new();
    // A train waits for its second fragment under identification 0x1234 ...
    let train = echo_request6(64, 4, &[0x55; 40]);
    assert!(
        host.send(fragment6(&train, 0x1234, 0, &train[40..64], true))
            .is_empty()
    );
    // ... and atomic fragments with the same identification are processed in isolation.
    let request = echo_request6(64, 3, b"atomic");
    let atomic = fragment6(&request, 0x1234, 0, &request[40..], false);
    assert_eq!(host.send(atomic), [echo_reply6(3, b"atomic")]);
    let datagram = udp6(PEER6, US6, (40000, 7), b"options");
    let atomic = fragment6(&datagram, 0x1234, 0, &datagram[40..], false);
    assert_eq!(host.send(atomic), [echoed()]);
    let last = fragment6(&train, 0x1234, 24, &train[64..], false);
    assert_eq!(host.send(last), [echo_reply6(4, &[0x55; 40])]);
    assert_eq!(
        host.verdicts(),
        [
            "fragment -> reassembly",
            "icmp -> stack",
            "udp socket *:7",
            "last fragment: 88 byte packet reassembled; icmp -> stack",
        ]
    );
}

#[test]
fn rfc5722_4_overlapping_ipv6_fragments_discard_the_train() {
    let mut host = Host::new();
    let request = echo_request6(64, 5, &[0xaa; 40]);
    let body = &request[40..];
    // Bytes 16..24 come twice, the second time different: the whole train goes.
    let first = fragment6(&request, 7, 0, &body[..24], true);
    let overlapping = fragment6(&request, 7, 16, &[0xbb; 24], true);
    let last = fragment6(&request, 7, 40, &body[40..], false);
    assert!(host.send(first).is_empty());
    assert!(host.send(overlapping).is_empty());
    assert!(
        host.send(last).is_empty(),
        "nothing reassembled, no ICMP error"
    );
    assert_eq!(
        host.verdicts(),
        [
            "fragment -> reassembly",
            "overlapping fragment: train discarded",
            "fragment -> reassembly",
        ]
    );
    assert_eq!(host.stack.stats().drops_for(DropReason::FragmentOverlap), 1);
}

#[test]
fn rfc5722_4_an_exact_duplicate_fragment_is_dropped_alone() {
    let mut host = Host::new();
    let request = echo_request6(64, 6, &[0xcc; 40]);
    let first = fragment6(&request, 8, 0, &request[40..64], true);
    assert!(host.send(first.clone()).is_empty());
    assert!(host.send(first).is_empty());
    let last = fragment6(&request, 8, 24, &request[64..], false);
    assert_eq!(host.send(last), [echo_reply6(6, &[0xcc; 40])]);
    assert_eq!(host.verdicts()[1], "fragment-duplicate -> dropped");
    assert_eq!(
        host.stack.stats().drops_for(DropReason::FragmentDuplicate),
        1
    );
}

#[test]
fn rfc1858_4_overlapping_ipv4_fragments_cannot_turn_an_ack_into_a_syn() {
    let mut host = Host::new();
    let segment = |syn: bool| {
        let builder = PacketBuilder::ipv4(PEER4, US4, 64).tcp(40000, 7, 1000, 64240);
        let builder = if syn { builder.syn() } else { builder.ack(1) };
        let mut out = Vec::new();
        builder.write(&mut out, b"data").unwrap();
        out
    };
    let (ack, syn) = (segment(false), segment(true));
    // A filter that lets ACKs in sees this one whole; the second fragment rewrites its
    // flags (TCP bytes 8..24) into a SYN's. Linux discards the train; so does the stack.
    assert!(
        host.send(fragment4(&ack, 9, 0, &ack[20..], true))
            .is_empty()
    );
    let rewrite = fragment4(&syn, 9, 8, &syn[28..], false);
    assert!(host.send(rewrite).is_empty(), "no SYN-ACK");
    assert_eq!(host.verdicts()[1], "overlapping fragment: train discarded");
    assert_eq!(
        host.stack.socket_count(),
        2,
        "echo listener and udp socket only"
    );
}

// ---------------------------------------------------------------- extension headers

#[test]
fn rfc8200_4_6_destination_options_of_padding_only_are_processed() {
    let mut host = Host::new();
    let pads = vec![0, 0, 0, 1, 2, 0, 0, 0]; // Pad1, PadN, Pad1
    let datagram = udp_with(&[(DESTINATION_OPTIONS, pads)], US6);
    assert_eq!(host.send(datagram), [echoed()]);
    assert_eq!(host.verdicts(), ["udp socket *:7"]);
}

#[test]
fn rfc8200_4_2_unknown_option_with_action_00_is_skipped() {
    let mut host = Host::new();
    let skip = vec![0, 0, 0x1e, 4, 1, 2, 3, 4];
    assert_eq!(
        host.send(udp_with(&[(DESTINATION_OPTIONS, skip)], US6)),
        [echoed()]
    );
}

#[test]
fn rfc8200_4_3_hop_by_hop_then_destination_options_are_processed() {
    let mut host = Host::new();
    let pad = vec![0, 0, 1, 4, 0, 0, 0, 0];
    let headers = [(HOP_BY_HOP, pad.clone()), (DESTINATION_OPTIONS, pad)];
    assert_eq!(host.send(udp_with(&headers, US6)), [echoed()]);
}

#[test]
fn rfc8200_4_3_hop_by_hop_not_first_gets_parameter_problem_code_1() {
    let mut host = Host::new();
    let pad = vec![0, 0, 1, 4, 0, 0, 0, 0];
    let late = udp_with(
        &[(DESTINATION_OPTIONS, pad.clone()), (HOP_BY_HOP, pad)],
        US6,
    );
    let code = ParameterProblemCode::UnrecognizedNextHeader;
    assert_eq!(
        host.send(late.clone()),
        [parameter_problem(code, 40, &late)]
    );
    assert_eq!(
        host.verdicts(),
        ["hop-by-hop header not first -> dropped, ICMPv6 parameter problem code 1 pointer 40"]
    );
    assert_eq!(host.stack.stats().drops_for(DropReason::Ipv6Header), 1);
}

#[test]
fn rfc8200_4_2_unknown_option_with_action_01_is_discarded_silently() {
    let mut host = Host::new();
    let discard = vec![0, 0, 0x5e, 4, 1, 2, 3, 4];
    assert!(
        host.send(udp_with(&[(DESTINATION_OPTIONS, discard)], US6))
            .is_empty()
    );
    assert_eq!(host.verdicts(), ["ipv6-option -> dropped"]);
    assert_eq!(host.stack.stats().drops_for(DropReason::Ipv6Option), 1);
}

#[test]
fn rfc8200_4_2_unknown_option_with_action_10_gets_parameter_problem_code_2_even_to_multicast() {
    let mut host = Host::new();
    let option = vec![0, 0, 0x9e, 4, 1, 2, 3, 4];
    let code = ParameterProblemCode::UnrecognizedIpv6Option;
    for dst in [US6, ALL_NODES] {
        let datagram = udp_with(&[(DESTINATION_OPTIONS, option.clone())], dst);
        let problem = parameter_problem(code, 42, &datagram);
        assert_eq!(host.send(datagram), [problem], "to {dst:x?}");
    }
    assert_eq!(host.stack.stats().drops_for(DropReason::Ipv6Option), 2);
}

#[test]
fn rfc8200_4_2_unknown_option_with_action_11_gets_parameter_problem_unless_multicast() {
    let mut host = Host::new();
    let option = vec![0, 0, 0xde, 4, 1, 2, 3, 4];
    let datagram = udp_with(&[(DESTINATION_OPTIONS, option.clone())], US6);
    let code = ParameterProblemCode::UnrecognizedIpv6Option;
    let problem = parameter_problem(code, 42, &datagram);
    assert_eq!(host.send(datagram), [problem]);
    let to_all = udp_with(&[(DESTINATION_OPTIONS, option)], ALL_NODES);
    assert!(
        host.send(to_all).is_empty(),
        "no error about a multicast packet"
    );
    assert_eq!(host.stack.stats().drops_for(DropReason::Ipv6Option), 2);
}

#[test]
fn rfc4443_2_4_e_no_parameter_problem_about_an_icmpv6_error() {
    let mut host = Host::new();
    let quoted = udp6(US6, PEER6, (7, 40000), b"x");
    let error = port_unreachable6(PEER6, US6, &quoted);
    let option = vec![0, 0, 0x9e, 4, 1, 2, 3, 4];
    let error = with_extensions(&error, &[(DESTINATION_OPTIONS, option)]);
    assert!(host.send(error).is_empty());
    assert_eq!(host.verdicts(), ["ipv6-option -> dropped"]);
}

#[test]
fn rfc8200_4_4_routing_header_type_0_with_segments_left_0_is_ignored() {
    let mut host = Host::new();
    let datagram = udp_with(&[(ROUTING, routing_header(0))], US6);
    assert_eq!(host.send(datagram), [echoed()]);
}

#[test]
fn rfc8200_4_4_routing_header_with_segments_left_1_gets_parameter_problem_code_0() {
    let mut host = Host::new();
    // As a sender makes it: the UDP checksum covers the final destination (RFC 8200 §8.1).
    let final_destination = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9];
    let plain = udp6(PEER6, final_destination, (40000, 7), b"options");
    let mut datagram = with_extensions(&plain, &[(ROUTING, routing_header(1))]);
    datagram[24..40].copy_from_slice(&US6);
    let code = ParameterProblemCode::ErroneousHeaderField;
    let problem = parameter_problem(code, 42, &datagram);
    assert_eq!(host.send(datagram), [problem]);
    assert_eq!(
        host.verdicts(),
        [
            "routing header type 0, segments left 1 -> dropped, ICMPv6 parameter problem code 0 \
          pointer 42"
        ]
    );
}

// ---------------------------------------------------------------- ICMP error rate limit

/// 100 datagrams to closed ports from `datagram(i)`, one every 0.76 ms (76 ms in all).
fn flood(host: &mut Host, datagram: impl Fn(u16) -> Vec<u8>) -> Vec<Vec<u8>> {
    let mut answers = Vec::new();
    for i in 0..100u16 {
        host.now = Instant::from_micros(i64::from(i) * 760);
        answers.extend(host.send(datagram(i)));
    }
    answers
}

#[test]
fn rfc4443_2_4_f_icmpv6_errors_are_rate_limited() {
    let mut host = Host::new();
    let datagram = |i| udp6(PEER6, US6, (40000 + i, 9), b"closed");
    let errors = flood(&mut host, datagram);
    assert_eq!(errors.len(), 6, "a burst of 6 per destination, like Linux");
    assert_eq!(errors[0], port_unreachable6(US6, PEER6, &datagram(0)));
    let stats = host.stack.stats();
    assert_eq!((stats.icmp_errors_sent, stats.icmp_rate_limited), (6, 94));
    let limited = host.verdicts().into_iter();
    let limited = limited.filter(|v| v == "no udp socket -> icmp rate limit, no port unreachable");
    assert_eq!(limited.count(), 94);
    // One a second after that: not sooner.
    host.now = Instant::from_millis(999);
    assert!(host.send(datagram(100)).is_empty());
    host.now = Instant::from_millis(1000);
    assert_eq!(host.send(datagram(101)).len(), 1);
}

#[test]
fn rfc1812_4_3_2_8_icmp_errors_are_rate_limited() {
    let mut host = Host::new();
    let datagram = |i| udp4(PEER4, US4, (40000 + i, 9), b"closed");
    let errors = flood(&mut host, datagram);
    assert_eq!(errors.len(), 6);
    assert_eq!(errors[0], port_unreachable4(PEER4, &datagram(0)));
}

#[test]
fn rfc4443_2_4_f_one_bucket_for_all_destinations_caps_the_burst() {
    let mut host = Host::new();
    // 100 sources at the same moment: 6 each would be allowed, 50 in all are.
    let mut errors = 0;
    for i in 0..100u8 {
        errors += host.send(udp4([10, 0, 0, i], US4, (40000, 9), b"x")).len();
    }
    assert_eq!(errors, 50, "icmp_msgs_burst");
    // 1000 a second earn one per millisecond.
    host.wait(Duration::from_millis(3));
    for i in 100..110u8 {
        errors += host.send(udp4([10, 0, 0, i], US4, (40000, 9), b"x")).len();
    }
    assert_eq!(errors, 53);
}

#[test]
fn rfc4443_2_4_f_the_rate_limit_can_be_turned_off() {
    let mut host = Host::with_config(StackConfig {
        icmp_msgs_per_sec: 0,
        icmp_ratelimit: Duration::ZERO,
        ..StackConfig::default()
    });
    let errors = flood(&mut host, |i| udp4(PEER4, US4, (40000 + i, 9), b"x"));
    assert_eq!(errors.len(), 100);
}

#[test]
fn rfc4443_2_4_f_echo_replies_are_never_rate_limited() {
    let mut host = Host::new();
    flood(&mut host, |i| udp6(PEER6, US6, (40000 + i, 9), b"closed"));
    let replies = flood(&mut host, |i| echo_request6(64, i, b"ping"));
    assert_eq!(replies.len(), 100);
}

// ---------------------------------------------------------------- echo

fn echo_to(dst: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(PEER4, dst, 64)
        .icmpv4_echo_request(0x77, 1)
        .write(&mut out, b"anyone?")
        .unwrap();
    out
}

#[test]
fn rfc1122_3_2_2_6_echo_to_a_broadcast_address_is_ignored_by_default() {
    let mut host = Host::new();
    assert!(host.send(echo_to([192, 168, 69, 255])).is_empty());
    assert!(host.send(echo_to([255, 255, 255, 255])).is_empty());
    assert_eq!(host.verdicts(), ["broadcast-echo -> dropped"; 2]);
    assert_eq!(host.stack.stats().drops_for(DropReason::BroadcastEcho), 2);
}

#[test]
fn rfc1122_3_2_2_6_echo_to_a_broadcast_address_is_answered_when_asked() {
    let mut host = Host::with_config(StackConfig {
        echo_broadcast: true,
        ..StackConfig::default()
    });
    for dst in [[192, 168, 69, 255], [255, 255, 255, 255]] {
        assert_eq!(host.send(echo_to(dst)), [echo_reply4(PEER4, 1, b"anyone?")]);
    }
}

#[test]
fn rfc1122_3_2_2_6_echo_reply_reflects_record_route() {
    let mut host = Host::new();
    // As `ping -R` sends it: NOP, then Record Route with nine empty slots.
    let mut options = vec![1, 7, 39, 4];
    options.resize(40, 0);
    let mut request = Vec::new();
    PacketBuilder::ip(etherparse::IpHeaders::Ipv4(
        header_with_options(PEER4, US4, &options),
        Default::default(),
    ))
    .icmpv4_echo_request(0x77, 9)
    .write(&mut request, b"route")
    .unwrap();
    // The reply carries the route with our address recorded, then End of Options.
    let mut recorded = vec![7, 39, 8, 192, 168, 69, 2];
    recorded.resize(40, 0);
    let mut reply = Vec::new();
    PacketBuilder::ip(etherparse::IpHeaders::Ipv4(
        header_with_options(US4, PEER4, &recorded),
        Default::default(),
    ))
    .icmpv4_echo_reply(0x77, 9)
    .write(&mut reply, b"route")
    .unwrap();
    assert_eq!(host.send(request), [reply]);
}

// ---------------------------------------------------------------- TCP options

/// RFC 9293 MUST-7: be prepared for an illegal option length. A SYN with one is dropped
/// and counted, not answered (Linux answers, ignoring the options from the bad one on):
/// no honest peer sends it, and smoltcp's parser rejects the segment outright, so an
/// answer would mean rewriting the options — work and a socket spent on a forged SYN.
#[test]
fn rfc9293_3_1_a_syn_with_an_illegal_option_length_is_dropped_and_counted() {
    let mut host = Host::new();
    for options in [[2u8, 0, 5, 0xb4], [2, 40, 5, 0xb4]] {
        let mut header = TcpHeader::new(40000, 7, 1000, 64240);
        header.syn = true;
        header.set_options_raw(&options).unwrap();
        let mut syn = Vec::new();
        PacketBuilder::ipv4(PEER4, US4, 64)
            .tcp_header(header)
            .write(&mut syn, &[])
            .unwrap();
        assert!(host.send(syn).is_empty());
    }
    assert_eq!(
        host.verdicts(),
        ["malformed: tcp header or options rejected -> dropped"; 2]
    );
    assert_eq!(host.stack.stats().drops_for(DropReason::Malformed), 2);
}

// ---------------------------------------------------------------- ICMP errors for UDP

#[test]
fn rfc1122_4_1_3_3_port_unreachable_reaches_the_connected_udp_socket() {
    let mut host = Host::new();
    for (any, peer) in [("0.0.0.0:0", "192.168.69.1:9"), ("[::]:0", "[fd69::1]:9")] {
        let socket = UdpSocket::bind(&host.stack, any.parse().unwrap()).unwrap();
        socket.connect(peer.parse().unwrap()).unwrap();
        socket.send_to(b"anyone?", peer.parse().unwrap()).unwrap();
        let sent = host.poll();
        assert_eq!(sent.len(), 1);
        let mut error = Vec::new();
        match sent[0][0] >> 4 {
            4 => PacketBuilder::ipv4(PEER4, US4, 64)
                .icmpv4(Icmpv4Type::DestinationUnreachable(
                    DestUnreachableHeader::Port,
                ))
                .write(&mut error, &sent[0]),
            _ => PacketBuilder::ipv6(PEER6, US6, 64)
                .icmpv6(Icmpv6Type::DestinationUnreachable(
                    DestUnreachableCode::Port,
                ))
                .write(&mut error, &sent[0]),
        }
        .unwrap();
        host.ready.clear();
        assert!(host.send(error).is_empty());
        assert!(host.ready.contains(&socket.id()), "the socket is woken");
        assert!(matches!(
            socket.recv_from(&mut [0; 16]),
            Err(Error::ConnectionRefused)
        ));
        assert!(
            matches!(socket.recv_from(&mut [0; 16]), Err(Error::WouldBlock)),
            "reported once"
        );
    }
    assert_eq!(host.stack.stats().icmp_errors, 2);
}

#[test]
fn rfc1122_4_1_3_3_an_unconnected_udp_socket_is_not_told_like_linux() {
    let mut host = Host::new();
    let socket = UdpSocket::bind(&host.stack, "0.0.0.0:0".parse().unwrap()).unwrap();
    socket
        .send_to(b"x", "192.168.69.1:9".parse().unwrap())
        .unwrap();
    let sent = host.poll();
    host.send(port_unreachable_from_peer(&sent[0]));
    assert!(matches!(
        socket.recv_from(&mut [0; 16]),
        Err(Error::WouldBlock)
    ));
    assert!(socket.take_error().is_none());
}

#[test]
fn rfc1122_3_2_2_no_icmp_error_about_a_datagram_to_a_broadcast_address() {
    let mut host = Host::new();
    let datagram = udp4(PEER4, [192, 168, 69, 255], (40000, 9), b"x");
    assert!(host.send(datagram).is_empty());
    assert_eq!(host.verdicts(), ["not-for-us -> dropped"]);
}
