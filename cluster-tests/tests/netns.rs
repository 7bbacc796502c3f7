//! The regions' network namespaces themselves (root only; run with
//! `CAS_CLUSTER_NET=netns`, otherwise the test says it skips): round trips between
//! regions measured over TCP from inside the namespaces, and cuts that drop packets
//! both ways while the host stays reachable.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use cas_cluster_tests::scenario_network;
use cas_node::config::Region;
use cas_node::local_cluster::{ClusterNetwork, RegionNetwork};

const PORT: u16 = 7400;

/// Runs `f` on a thread that lives in network namespace `netns`.
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{netns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace file");
        // SAFETY: setns on this thread only, with a valid descriptor of a network
        // namespace; the thread's sockets are then created inside it.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
}

/// How long an echo server accepts connections.
const SERVE_FOR: Duration = Duration::from_secs(120);

/// An echo server inside `netns`, accepting connections for [`SERVE_FOR`].
fn echo_server(netns: &str, ip: Ipv4Addr) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    in_netns(netns, move || {
        let l = TcpListener::bind((ip, PORT)).expect("bind");
        l.set_nonblocking(true).expect("non-blocking listener");
        ready_tx.send(()).unwrap();
        let deadline = Instant::now() + SERVE_FOR;
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).expect("blocking stream");
                    s.set_read_timeout(Some(SERVE_FOR)).expect("read timeout");
                    std::thread::spawn(move || {
                        let mut b = [0u8; 1];
                        while s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {}
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    ready_rx.recv().expect("echo server up");
}

/// The shortest of 5 one-byte round trips to `to`, from `netns` (the host if
/// `None`); `None` if no connection within 2 s.
fn round_trip(netns: Option<&str>, to: Ipv4Addr) -> Option<Duration> {
    let probe = move || {
        let addr = SocketAddr::from((to, PORT));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_nodelay(true).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            s.write_all(b"x").ok()?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b).ok()?;
            best = best.min(t.elapsed());
        }
        Some(best)
    };
    match netns {
        Some(ns) => in_netns(ns, probe).join().expect("probe thread"),
        None => probe(),
    }
}

#[test]
fn region_links_carry_the_round_trips_and_cuts_drop_packets() {
    if scenario_network() != ClusterNetwork::Namespaces {
        eprintln!("skipped: set CAS_CLUSTER_NET=netns (as root) to run it");
        return;
    }
    let net = RegionNetwork::create(&Region::ALL, true).expect("namespaces");
    for r in Region::ALL {
        echo_server(net.netns(r).unwrap(), net.ip_of(r).unwrap());
    }
    let ns = |r: Region| net.netns(r).unwrap().to_owned();
    let ip = |r: Region| net.ip_of(r).unwrap();

    for (a, b) in [
        (Region::UsEast1, Region::EuWest3),
        (Region::EuWest3, Region::ApSoutheast1),
        (Region::UsEast1, Region::ApSoutheast1),
    ] {
        let rtt = round_trip(Some(&ns(a)), ip(b)).expect("regions reach each other");
        let expected = a.round_trip(b);
        eprintln!(
            "{a} → {b}: {rtt:?} (regions.md: {expected:?}; kernel latency: {})",
            net.kernel_latency()
        );
        // Where netem must work (the VM of scripts/netns-vm.sh), its absence fails.
        if std::env::var_os("CAS_REQUIRE_NETEM").is_some() {
            assert!(
                net.kernel_latency(),
                "CAS_REQUIRE_NETEM: the links got no netem"
            );
        }
        if net.kernel_latency() {
            assert!(
                rtt >= expected * 9 / 10 && rtt <= expected + Duration::from_millis(50),
                "{a} → {b}: {rtt:?}, expected about {expected:?}"
            );
        } else {
            assert!(rtt < Duration::from_millis(50), "{a} → {b}: {rtt:?}");
        }
    }
    let host = round_trip(None, ip(Region::ApSoutheast1)).expect("host reaches a region");
    assert!(host < Duration::from_millis(50), "host → region: {host:?}");

    net.cut(&[Region::ApSoutheast1]).expect("cut");
    assert!(
        round_trip(Some(&ns(Region::UsEast1)), ip(Region::ApSoutheast1)).is_none(),
        "a cut region is still reachable from another region"
    );
    assert!(
        round_trip(Some(&ns(Region::ApSoutheast1)), ip(Region::EuWest3)).is_none(),
        "a cut region still reaches another region"
    );
    assert!(round_trip(Some(&ns(Region::UsEast1)), ip(Region::EuWest3)).is_some());
    assert!(
        round_trip(None, ip(Region::ApSoutheast1)).is_some(),
        "the host (S3, clients) must still reach a cut region"
    );
    net.cut(&[]).expect("heal");
    assert!(round_trip(Some(&ns(Region::UsEast1)), ip(Region::ApSoutheast1)).is_some());
}
