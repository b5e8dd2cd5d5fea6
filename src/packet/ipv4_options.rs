//! IPv4 header options, as far as a host acts on them: finds the Record Route option
//! (RFC 791 §3.1), which an echo reply reflects with the host's address added
//! (RFC 1122 §3.2.2.6). Checked accesses only.

/// The Record Route option's type.
const RECORD_ROUTE: u8 = 7;

/// Where the Record Route option of an IPv4 `packet` is: `(offset, length)` in the packet.
/// `None` without one, or when the options do not parse.
pub fn record_route(packet: &[u8]) -> Option<(usize, usize)> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    if packet.first()? >> 4 != 4 || ihl <= 20 {
        return None;
    }
    let options = packet.get(20..ihl)?;
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => return None, // end of option list
            1 => i += 1,      // no operation
            kind => {
                let len = usize::from(*options.get(i + 1)?);
                if len < 2 || i + len > options.len() {
                    return None;
                }
                if kind == RECORD_ROUTE && len >= 3 {
                    return Some((20 + i, len));
                }
                i += len;
            }
        }
    }
    None
}

/// Writes into `option` (a copy of a Record Route option) `address` at its pointer, if
/// there is room, and moves the pointer on (RFC 791: the pointer is 1-based, from 4).
pub fn record_address(option: &mut [u8], address: [u8; 4]) {
    let Some(&pointer) = option.get(2) else {
        return;
    };
    let at = usize::from(pointer).saturating_sub(1);
    if pointer >= 4
        && let Some(slot) = option.get_mut(at..at + 4)
    {
        slot.copy_from_slice(&address);
        option[2] = pointer.saturating_add(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(options: &[u8]) -> Vec<u8> {
        let words = 5 + options.len().div_ceil(4);
        let mut p = vec![0x40 | words as u8];
        p.extend_from_slice(&[0; 19]);
        p.extend_from_slice(options);
        p.resize(words * 4, 0);
        p
    }

    #[test]
    fn record_route_is_found_behind_other_options() {
        let p = header(&[1, 7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(record_route(&p), Some((21, 11)));
        assert_eq!(record_route(&header(&[])), None);
        assert_eq!(record_route(&header(&[0, 7, 7, 4])), None, "after the end");
        assert_eq!(record_route(&header(&[7, 40, 4, 0])), None, "runs past");
        for cut in 0..p.len() {
            let _ = record_route(&p[..cut]);
        }
    }

    #[test]
    fn an_address_is_recorded_while_there_is_room() {
        let mut option = [7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0];
        record_address(&mut option, [10, 0, 0, 1]);
        record_address(&mut option, [10, 0, 0, 2]);
        record_address(&mut option, [10, 0, 0, 3]);
        assert_eq!(option, [7, 11, 12, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
}
