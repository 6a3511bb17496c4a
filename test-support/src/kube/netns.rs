//! A private network namespace for one test thread, in which every address
//! of [`POD_CIDR`] is local (bindable and reachable like 127/8).
//!
//! Why: EndpointSlice addresses may not be loopback (the API server answers
//! 422), so workloads get 10.244.x.y addresses ([`pod_ip`]); inside the
//! namespace those are as good as loopback, and nothing outside sees them
//! or the API server's ports.
//!
//! How: `ip netns add` makes a fresh namespace (with `lo` up and
//! `local 10.244.0.0/16 dev lo` in the `local` table), the calling thread
//! joins it with setns(2) (rustix's safe `move_into_link_name_space`; the
//! workspace forbids `unsafe`, and `unshare` is only offered unsafe), and
//! the name is removed again at once: the namespace lives as long as a
//! thread or process is in it. Only the calling thread moves; the threads
//! and child processes it creates afterwards (a tokio runtime's workers,
//! etcd, kube-apiserver, meshd) start inside.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};

/// The workload range made local by [`enter_private`].
pub const POD_CIDR: &str = "10.244.0.0/16";

/// The `n`th workload address: `10.244.(n / 256).(n % 256)`, so
/// `pod_ip(5)` is 10.244.0.5 and `pod_ip(0x107)` 10.244.1.7. Distinct
/// for distinct `n`; panics on 0 (10.244.0.0, the range's own address).
pub fn pod_ip(n: u16) -> IpAddr {
    assert!(
        n != 0,
        "pod_ip(0) would be 10.244.0.0, the network address of {POD_CIDR}; start at 1"
    );
    let [hi, lo] = n.to_be_bytes();
    IpAddr::V4(Ipv4Addr::new(10, 244, hi, lo))
}

/// Moves the calling thread into a fresh network namespace with `lo` up and
/// [`POD_CIDR`] routed as local, then checks that a listener on 10.244.1.7
/// accepts a connection. Threads and child processes created by this
/// thread afterwards inherit the namespace, so call it first in a plain
/// `#[test]`, before building the tokio runtime.
///
/// Needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`;
/// without them it panics saying so: a test that cannot run fails.
pub fn enter_private() {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let before = std::fs::read_link("/proc/thread-self/ns/net").ok();
    let name = format!(
        "mesh-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    ip(&["netns", "add", &name]);
    // Removes the name (not the namespace) however this function ends.
    let named = Named(name);
    ip(&["-n", &named.0, "link", "set", "lo", "up"]);
    ip(&[
        "-n", &named.0, "route", "add", "local", POD_CIDR, "dev", "lo", "table", "local",
    ]);
    let path = format!("/run/netns/{}", named.0);
    let ns = File::open(&path).unwrap_or_else(|e| {
        panic!("opening {path} (made by `ip netns add`): {e}; needs root (CAP_SYS_ADMIN)")
    });
    move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network)).unwrap_or_else(|e| {
        panic!(
            "setns(2) into the network namespace {path}: {e}; needs root (CAP_SYS_ADMIN); \
             the Kubernetes tests cannot run without it"
        )
    });
    drop(ns);
    drop(named);
    let after = std::fs::read_link("/proc/thread-self/ns/net").ok();
    assert!(
        after.is_some() && after != before,
        "the thread's network namespace did not change ({before:?} -> {after:?})"
    );
    check_local(pod_ip(0x107));
}

/// Binds `ip`, connects to it and accepts, each bounded.
fn check_local(ip: IpAddr) {
    let listener = TcpListener::bind((ip, 0)).unwrap_or_else(|e| {
        panic!("binding {ip} in the private network namespace ({POD_CIDR} local): {e}")
    });
    let addr: SocketAddr = listener.local_addr().unwrap();
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connecting to {addr} in the private network namespace: {e}"));
    // The connection is already queued: accept answers at once.
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(
        peer.ip(),
        ip,
        "a connection to {addr} came from {peer}, not from the local {ip}"
    );
    drop(stream);
}

/// A name in /run/netns; `ip netns del` on drop.
struct Named(String);

impl Drop for Named {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Runs `ip ARGS`, panicking with what it said and what it needs.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!(
            "running `ip {}`: {e}; install iproute2 (apt-get install iproute2; scripts/test.sh does)",
            args.join(" ")
        )
    });
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}; a private network namespace needs root (CAP_SYS_ADMIN and \
         CAP_NET_ADMIN): run the Kubernetes tests as root",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}
