//! Batched UDP I/O: `recvmmsg` into preallocated slots, `sendmmsg` of
//! slices of those slots, runs to one destination segmented by UDP GSO
//! where asked for. Nothing here allocates after construction.
//!
//! Why libc and not a crate: quinn-udp batches receives but sends one
//! destination per call (GSO), and both users here send to many
//! destinations: the TURN relay from one socket (to clients) or to one
//! destination each from many sockets (to peers), a media worker from one
//! socket to every subscriber of a packet; what is needed is `sendmmsg` over
//! scattered (fd, destination, bytes) triples, a few lines over libc.

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per syscall.
pub const BATCH: usize = 32;
/// Bytes per slot. TURN traffic is MTU-sized; larger datagrams are dropped.
pub const SLOT: usize = 2048;

pub fn to_storage(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            };
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(out as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            sin6.sin6_scope_id = a.scope_id();
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

pub fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says it is a sockaddr_in.
            let sin = unsafe { &*(s as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says it is a sockaddr_in6.
            let sin6 = unsafe { &*(s as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// `BATCH` receive slots, each `SLOT` bytes, of which the first `headroom`
/// bytes are left free so a header can be put in front of the payload.
pub struct RecvBatch {
    bufs: Box<[u8]>,
    names: Box<[libc::sockaddr_storage]>,
    /// Owned here because `hdrs` point at them.
    _iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Filled slots: (bytes, source).
    pub got: Box<[(usize, Option<SocketAddr>)]>,
    /// Slots in use, from 0.
    pub filled: usize,
}

impl RecvBatch {
    /// `tailroom` bytes at the end of each slot stay free too (padding).
    pub fn new(headroom: usize, tailroom: usize) -> RecvBatch {
        let mut bufs = vec![0u8; BATCH * SLOT].into_boxed_slice();
        // SAFETY: all-zero is a valid sockaddr_storage / iovec / mmsghdr.
        let mut names: Box<[libc::sockaddr_storage]> = (0..BATCH)
            .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
            .collect();
        let mut iovs: Box<[libc::iovec]> = (0..BATCH)
            .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
            .collect();
        let mut hdrs: Box<[libc::mmsghdr]> = (0..BATCH)
            .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
            .collect();
        for i in 0..BATCH {
            iovs[i].iov_base = bufs[i * SLOT + headroom..].as_mut_ptr().cast();
            iovs[i].iov_len = SLOT - headroom - tailroom;
        }
        for i in 0..BATCH {
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        RecvBatch {
            bufs,
            names,
            _iovs: iovs,
            hdrs,
            got: vec![(0, None); BATCH].into_boxed_slice(),
            filled: 0,
        }
    }

    pub fn free(&self) -> usize {
        BATCH - self.filled
    }

    /// Receives up to `free()` datagrams from `fd` into the next slots.
    /// Returns how many (0 when the socket had nothing: WouldBlock).
    /// Truncated datagrams come back with length `usize::MAX`.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let start = self.filled;
        let want = BATCH - start;
        if want == 0 {
            return Ok(0);
        }
        for h in &mut self.hdrs[start..] {
            h.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: hdrs[start..] point at live iovecs and names owned by self.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs[start..].as_mut_ptr(),
                want as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        let n = n as usize;
        for i in start..start + n {
            let truncated = self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            let len = if truncated {
                usize::MAX
            } else {
                self.hdrs[i].msg_len as usize
            };
            self.got[i] = (len, from_storage(&self.names[i]));
        }
        self.filled += n;
        Ok(n)
    }

    /// The whole slot `i`: headroom, then the payload at `headroom()`.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.bufs[i * SLOT..(i + 1) * SLOT]
    }

    pub fn clear(&mut self) {
        self.filled = 0;
    }
}

/// Outgoing datagrams, each a slice of some buffer that outlives the next
/// [`SendBatch::flush`]. Runs of the same socket go out in one `sendmmsg`.
///
/// With [`enable_gso`](SendBatch::enable_gso), consecutive datagrams to one
/// destination of one size (the last of a run may be shorter) become one
/// message the kernel splits (UDP generic segmentation offload, Linux 4.18+):
/// one trip down the stack for a run, e.g. a video frame's packets to one
/// subscriber. The datagrams stay scattered: each is one `iovec` of the
/// message, nothing is copied.
pub struct SendBatch {
    fds: Box<[RawFd]>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Each message's control buffer (the UDP_SEGMENT size when it carries
    /// several datagrams), `u64`s for `cmsghdr` alignment.
    controls: Box<[[u64; CONTROL_WORDS]]>,
    /// Each message: its first iovec, how many datagrams, their size.
    runs: Box<[Run]>,
    /// Messages queued.
    len: usize,
    /// iovecs (datagrams) queued.
    datagrams: usize,
    gso: bool,
}

#[derive(Clone, Copy, Default)]
struct Run {
    first: usize,
    count: usize,
    size: usize,
    /// A datagram shorter than `size` ended it: nothing more joins.
    closed: bool,
}

/// Room for one `cmsghdr` with a `u16`, in `u64`s.
const CONTROL_WORDS: usize = 4;
/// Most datagrams in one GSO message (the kernel's UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO message (a UDP datagram's limit, less headers).
const GSO_MAX_BYTES: usize = 65_000;

/// What one flush did.
#[derive(Default, Debug, Clone, Copy)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub ok: u64,
    /// Datagrams it refused.
    pub failed: u64,
    /// Messages that carried them (fewer than datagrams when runs were
    /// segmented by GSO).
    pub messages: u64,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

impl SendBatch {
    pub fn new() -> SendBatch {
        // SAFETY: all-zero is a valid sockaddr_storage / iovec / mmsghdr.
        let names: Box<[libc::sockaddr_storage]> = (0..BATCH)
            .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
            .collect();
        let iovs: Box<[libc::iovec]> = (0..BATCH)
            .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
            .collect();
        let hdrs: Box<[libc::mmsghdr]> = (0..BATCH)
            .map(|_| unsafe { MaybeUninit::zeroed().assume_init() })
            .collect();
        SendBatch {
            fds: vec![-1; BATCH].into_boxed_slice(),
            names,
            iovs,
            hdrs,
            controls: vec![[0; CONTROL_WORDS]; BATCH].into_boxed_slice(),
            runs: vec![Run::default(); BATCH].into_boxed_slice(),
            len: 0,
            datagrams: 0,
            gso: false,
        }
    }

    /// Segments runs of equal-sized datagrams to one destination on `fd`
    /// (and sockets like it) with UDP GSO, if the kernel has it; returns
    /// whether it does. A send the kernel refuses for GSO turns it off and
    /// sends that run's datagrams one by one.
    pub fn enable_gso(&mut self, fd: RawFd) -> bool {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: value and len are valid for the call.
        let supported = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        } == 0;
        self.gso = supported;
        supported
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues `data` for `to` on `fd`.
    ///
    /// # Safety
    /// `data` must stay valid and unmoved until the next `flush` (it lives
    /// in a [`RecvBatch`] that is not refilled before then).
    /// Callers push at most one datagram per received one, so a batch
    /// never overflows; if it would, the datagram is dropped (false).
    pub unsafe fn push(&mut self, fd: RawFd, to: &SocketAddr, data: &[u8]) -> bool {
        if self.datagrams == BATCH {
            return false;
        }
        let d = self.datagrams;
        self.iovs[d].iov_base = data.as_ptr() as *mut libc::c_void;
        self.iovs[d].iov_len = data.len();
        self.datagrams += 1;
        if self.joins_last_run(fd, to, data.len()) {
            let run = &mut self.runs[self.len - 1];
            run.count += 1;
            run.closed = data.len() < run.size;
            self.hdrs[self.len - 1].msg_hdr.msg_iovlen = run.count as _;
            return true;
        }
        let i = self.len;
        self.fds[i] = fd;
        let namelen = to_storage(to, &mut self.names[i]);
        self.runs[i] = Run {
            first: d,
            count: 1,
            size: data.len(),
            closed: data.is_empty(),
        };
        let h = &mut self.hdrs[i].msg_hdr;
        h.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
        h.msg_namelen = namelen;
        h.msg_iov = &mut self.iovs[d];
        h.msg_iovlen = 1;
        h.msg_control = std::ptr::null_mut();
        h.msg_controllen = 0;
        self.len += 1;
        true
    }

    /// Whether a datagram of `size` for `to` on `fd` can be segmented with
    /// the last message's.
    fn joins_last_run(&self, fd: RawFd, to: &SocketAddr, size: usize) -> bool {
        if !self.gso || self.len == 0 {
            return false;
        }
        let last = self.len - 1;
        let run = &self.runs[last];
        self.fds[last] == fd
            && !run.closed
            && size > 0
            && size <= run.size
            && run.count < GSO_MAX_SEGMENTS
            && run.size * run.count + size <= GSO_MAX_BYTES
            && from_storage(&self.names[last]) == Some(*to)
    }

    /// Puts the UDP_SEGMENT size on message `i` if it carries several
    /// datagrams.
    fn set_segment_size(&mut self, i: usize) {
        let run = self.runs[i];
        let h = &mut self.hdrs[i].msg_hdr;
        if run.count < 2 {
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            return;
        }
        let control = &mut self.controls[i];
        *control = [0; CONTROL_WORDS];
        h.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE of a u16 fits the CONTROL_WORDS buffer.
        h.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as _;
        // SAFETY: msg_control points at a zeroed, aligned buffer of
        // msg_controllen bytes, so the first header is within it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(h);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), run.size as u16);
        }
    }

    /// Sends everything queued. A datagram the kernel refuses (buffer full,
    /// unreachable) is counted as failed and skipped, as UDP would lose it.
    pub fn flush(&mut self) -> Sent {
        let mut sent = Sent::default();
        for i in 0..self.len {
            self.set_segment_size(i);
        }
        let mut i = 0;
        while i < self.len {
            let fd = self.fds[i];
            let mut end = i + 1;
            while end < self.len && self.fds[end] == fd {
                end += 1;
            }
            if end - i == 1 && self.runs[i].count == 1 {
                // One datagram: sendto copies no msghdr.
                let ok = self.send_datagram(i, self.runs[i].first);
                sent.messages += 1;
                if ok {
                    sent.ok += 1;
                } else {
                    sent.failed += 1;
                }
                i = end;
                continue;
            }
            while i < end {
                // SAFETY: hdrs[i..end] point at names/iovs/controls owned by
                // self and at payloads the caller keeps alive until this
                // flush (see push).
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.hdrs[i..end].as_mut_ptr(),
                        (end - i) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n <= 0 {
                    let e = io::Error::last_os_error();
                    if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    let run = self.runs[i];
                    if run.count > 1 {
                        // The kernel would not segment it (a device without
                        // checksum offload): no GSO from now on, and this
                        // run's datagrams go one by one.
                        self.gso = false;
                        for d in run.first..run.first + run.count {
                            sent.messages += 1;
                            if self.send_datagram(i, d) {
                                sent.ok += 1;
                            } else {
                                sent.failed += 1;
                            }
                        }
                    } else {
                        // The first one failed: skip it, try the rest.
                        sent.failed += 1;
                    }
                    i += 1;
                } else {
                    for run in &self.runs[i..i + n as usize] {
                        sent.ok += run.count as u64;
                    }
                    sent.messages += n as u64;
                    i += n as usize;
                }
            }
        }
        self.len = 0;
        self.datagrams = 0;
        sent
    }

    /// Datagram `d` alone, to message `i`'s destination.
    fn send_datagram(&self, i: usize, d: usize) -> bool {
        // SAFETY: the iovec points at a payload the caller keeps alive until
        // the flush (see push); the name is owned by self.
        let n = unsafe {
            libc::sendto(
                self.fds[i],
                self.iovs[d].iov_base,
                self.iovs[d].iov_len,
                libc::MSG_DONTWAIT,
                self.hdrs[i].msg_hdr.msg_name as *const libc::sockaddr,
                self.hdrs[i].msg_hdr.msg_namelen,
            )
        };
        n >= 0
    }
}

/// One datagram on a non-blocking socket, for the slow paths.
pub fn send_one(fd: RawFd, to: &SocketAddr, data: &[u8]) -> bool {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut name: libc::sockaddr_storage = unsafe { MaybeUninit::zeroed().assume_init() };
    let len = to_storage(to, &mut name);
    // SAFETY: data and name are valid for the call.
    let n = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT,
            (&name as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    n >= 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_round_trip_on_loopback() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10 + i as usize]).collect();
        let mut out = SendBatch::new();
        let mut total = 0;
        for chunk in payloads.chunks(BATCH) {
            for p in chunk {
                // SAFETY: payloads outlive the flush below.
                assert!(unsafe { out.push(a.as_raw_fd(), &to, p) });
            }
            total += out.flush().ok;
        }
        assert_eq!(total, 40);
        let mut rb = RecvBatch::new(8, 4);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 40 && std::time::Instant::now() < deadline {
            rb.clear();
            let n = rb.recv(b.as_raw_fd()).unwrap();
            for i in 0..n {
                let (len, from) = rb.got[i];
                assert_eq!(from, Some(a.local_addr().unwrap()));
                let h = 8;
                got.push(rb.slot_mut(i)[h..h + len].to_vec());
            }
        }
        assert_eq!(got, payloads);
    }

    /// Everything waiting on `socket`, as (payload, sender).
    fn drain(socket: &std::net::UdpSocket, expected: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut rb = RecvBatch::new(0, 0);
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < expected && std::time::Instant::now() < deadline {
            rb.clear();
            let Ok(n) = rb.recv(socket.as_raw_fd()) else {
                continue;
            };
            for i in 0..n {
                let (len, from) = rb.got[i];
                got.push((rb.slot_mut(i)[..len].to_vec(), from.unwrap()));
            }
        }
        got
    }

    #[test]
    fn with_gso_a_run_to_one_destination_is_one_message_and_arrives_as_its_datagrams() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&b, &c] {
            s.set_nonblocking(true).unwrap();
        }
        let mut out = SendBatch::new();
        assert!(out.enable_gso(a.as_raw_fd()), "this kernel has UDP GSO");
        // Five of 100 bytes and a shorter last one to b, then one to c, then
        // two more to b of another size: three messages.
        let to_b: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; 100])
            .chain([vec![5; 40]])
            .collect();
        let to_c = vec![9u8; 100];
        let to_b_again: Vec<Vec<u8>> = (10..12u8).map(|i| vec![i; 70]).collect();
        let (b_addr, c_addr) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        // SAFETY: every payload outlives the flush below.
        unsafe {
            for p in &to_b {
                assert!(out.push(a.as_raw_fd(), &b_addr, p));
            }
            assert!(out.push(a.as_raw_fd(), &c_addr, &to_c));
            for p in &to_b_again {
                assert!(out.push(a.as_raw_fd(), &b_addr, p));
            }
        }
        let sent = out.flush();
        assert_eq!((sent.ok, sent.failed, sent.messages), (9, 0, 3));
        let at_b: Vec<Vec<u8>> = drain(&b, 8).into_iter().map(|(p, _)| p).collect();
        let expected: Vec<Vec<u8>> = to_b.iter().chain(&to_b_again).cloned().collect();
        assert_eq!(at_b, expected);
        assert_eq!(drain(&c, 1), vec![(to_c, a.local_addr().unwrap())]);
    }

    #[test]
    fn without_gso_every_datagram_is_its_own_message() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_nonblocking(true).unwrap();
        let mut out = SendBatch::new();
        let payloads: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 100]).collect();
        // SAFETY: payloads outlive the flush below.
        unsafe {
            for p in &payloads {
                assert!(out.push(a.as_raw_fd(), &b.local_addr().unwrap(), p));
            }
        }
        let sent = out.flush();
        assert_eq!((sent.ok, sent.messages), (4, 4));
        let got: Vec<Vec<u8>> = drain(&b, 4).into_iter().map(|(p, _)| p).collect();
        assert_eq!(got, payloads);
    }
}
