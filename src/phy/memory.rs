//! An in-memory link: two devices joined back to back, for tests and examples that run
//! without root. A test can also play the peer by hand with [`MemoryLink::send_raw`] and
//! [`MemoryLink::recv_raw`].

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

/// Packets a direction holds before it drops, like a full device queue.
const QUEUE_LIMIT: usize = 8192;

/// Received packets' buffers kept for reuse, so a link in steady state allocates nothing
/// (tests count the stack's allocations per packet through it).
const SPARE_LIMIT: usize = 256;

type Queue = Rc<RefCell<VecDeque<Vec<u8>>>>;
type Spare = Rc<RefCell<Vec<Vec<u8>>>>;

/// One end of an in-memory IP link (`Medium::Ip`).
pub struct MemoryLink {
    rx: Queue,
    tx: Queue,
    spare: Spare,
    mtu: usize,
}

impl MemoryLink {
    /// Two ends: what one transmits, the other receives.
    pub fn pair(mtu: usize) -> (MemoryLink, MemoryLink) {
        let a: Queue = Rc::default();
        let b: Queue = Rc::default();
        let spare: Spare = Rc::default();
        (
            MemoryLink {
                rx: a.clone(),
                tx: b.clone(),
                spare: spare.clone(),
                mtu,
            },
            MemoryLink {
                rx: b,
                tx: a,
                spare,
                mtu,
            },
        )
    }

    /// Puts a packet on the wire towards the other end (dropped if the queue is full).
    pub fn send_raw(&self, packet: Vec<u8>) {
        let mut queue = self.tx.borrow_mut();
        if queue.len() < QUEUE_LIMIT {
            queue.push_back(packet);
        }
    }

    /// Takes the next packet the other end sent.
    pub fn recv_raw(&self) -> Option<Vec<u8>> {
        self.rx.borrow_mut().pop_front()
    }

    /// Packets waiting to be received on this end.
    pub fn pending(&self) -> usize {
        self.rx.borrow().len()
    }
}

/// Receive token of a [`MemoryLink`]; gives its buffer back to the link when consumed.
pub struct MemoryRx {
    packet: Vec<u8>,
    spare: Spare,
}

/// Transmit token of a [`MemoryLink`].
pub struct MemoryTx<'a>(&'a MemoryLink);

impl phy::RxToken for MemoryRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.packet);
        let mut spare = self.spare.borrow_mut();
        if spare.len() < SPARE_LIMIT {
            spare.push(self.packet);
        }
        result
    }
}

impl phy::TxToken for MemoryTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let spare = self.0.spare.borrow_mut().pop();
        let mut packet = spare.unwrap_or_else(|| Vec::with_capacity(len.max(self.0.mtu)));
        packet.clear();
        packet.resize(len, 0);
        let result = f(&mut packet);
        self.0.send_raw(packet);
        result
    }
}

impl Device for MemoryLink {
    type RxToken<'a> = MemoryRx;
    type TxToken<'a> = MemoryTx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(MemoryRx, MemoryTx<'_>)> {
        let packet = self.rx.borrow_mut().pop_front()?;
        let rx = MemoryRx {
            packet,
            spare: self.spare.clone(),
        };
        Some((rx, MemoryTx(self)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<MemoryTx<'_>> {
        Some(MemoryTx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}
