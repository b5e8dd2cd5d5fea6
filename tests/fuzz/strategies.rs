//! proptest strategies that generate fuzz cases: templates, mutations and inputs.

use super::packets::*;
use proptest::collection::vec;
use proptest::option::weighted;
use proptest::prelude::*;

pub fn port() -> impl Strategy<Value = Port> {
    prop_oneof![
        3 => Just(Port::Fixed(7)),
        1 => Just(Port::Fixed(9)),
        1 => Just(Port::Client),
        1 => any::<u16>().prop_map(Port::Fixed),
    ]
}

pub fn source_port() -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(40000), 1 => 1..CHECK_PORT, 1 => CHECK_PORT + 1..=u16::MAX]
}

pub fn number() -> impl Strategy<Value = Number> {
    prop_oneof![
        3 => (-3000i32..70_000).prop_map(Number::Near),
        1 => any::<u32>().prop_map(Number::Any),
    ]
}

pub fn transport() -> impl Strategy<Value = Transport> {
    let tcp = (
        source_port(),
        port(),
        (number(), number()),
        any::<u8>(),
        any::<u16>(),
        vec(any::<u8>(), 0..44),
    )
        .prop_map(
            |(sport, dport, numbers, flags, window, options)| Transport::Tcp {
                sport,
                dport,
                numbers,
                flags,
                window,
                options,
            },
        );
    let udp = (source_port(), port()).prop_map(|(sport, dport)| Transport::Udp { sport, dport });
    let kind = prop_oneof![
        Just((3, 3)),
        Just((1, 4)),
        Just((8, 0)),
        Just((128, 0)),
        any::<(u8, u8)>()
    ];
    let icmp = (kind, any::<[u8; 4]>(), weighted(0.5, 0usize..64))
        .prop_map(|(kind, rest, quote)| Transport::Icmp { kind, rest, quote });
    prop_oneof![
        6 => tcp,
        2 => udp,
        2 => icmp,
        1 => any::<u8>().prop_map(Transport::Other),
    ]
}

pub fn template() -> impl Strategy<Value = Template> {
    (
        any::<bool>(),
        weighted(0.05, any::<u8>()),
        prop_oneof![4 => Just(64u8), 1 => any::<u8>()],
        weighted(0.05, (0u16..200, any::<bool>())),
        transport(),
        vec(any::<u8>(), 0..200),
    )
        .prop_map(
            |(v6, spoofed_source, hop_limit, fragment, transport, payload)| Template {
                v6,
                spoofed_source,
                hop_limit,
                fragment,
                transport,
                payload,
            },
        )
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        2 => (0usize..80).prop_map(Mutation::Truncate),
        1 => vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        2 => (any::<u16>(), any::<bool>()).prop_map(|(value, fix)| Mutation::LieLength { value, fix }),
        2 => (0usize..300, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(cut, reverse, twice, overlap)| Mutation::Fragmentize { cut, reverse, twice, overlap }
        ),
        2 => (
            prop_oneof![Just(0u8), Just(43), Just(44), Just(60)],
            prop_oneof![Just(1u8), Just(0x1e), Just(0x5e), Just(0x9e), Just(0xde), any::<u8>()],
            0u8..3,
        )
            .prop_map(|(kind, option, segments_left)| Mutation::Extension {
                kind,
                option,
                segments_left,
            }),
    ]
}

pub fn input() -> impl Strategy<Value = Input> {
    let raw = (
        prop_oneof![Just(0x45u8), Just(0x60), any::<u8>()],
        vec(any::<u8>(), 0..80),
    )
        .prop_map(|(first, rest)| Input::Raw([vec![first], rest].concat()));
    prop_oneof![
        1 => raw,
        3 => (template(), vec(mutation(), 0..3)).prop_map(|(t, m)| Input::Built(t, m)),
    ]
}

pub fn case() -> impl Strategy<Value = Case> {
    (
        any::<bool>(),
        any::<bool>(),
        vec((input(), 0u16..3000), 1..10),
    )
        .prop_map(|(handshake, connect, steps)| Case {
            handshake,
            connect,
            steps,
        })
}
