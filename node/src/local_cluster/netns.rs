//! Regions as Linux network namespaces (needs root): each region of a local cluster
//! gets its own namespace with one address, joined to the host by a veth pair on a
//! bridge that this module creates. The host side of the bridge carries the S3
//! server and the test's clients; the nodes of a region run inside its namespace
//! (`ip netns exec`).
//!
//! Partitions are real: the kernel drops the packets between a cut-off region and
//! the others (`iptables` DROP rules inside the region's namespace), so calls time
//! out as they would on a broken link, while the region still reaches S3 and its
//! clients. Inter-region latency is the kernel's too (`tc netem` on each namespace's
//! link, delayed per destination region) when the kernel has it; otherwise the nodes
//! inject it themselves ([`RegionNetwork::kernel_latency`] says which).
//!
//! Everything created here is named after the owning process (`cas-<pid>-...`,
//! the bridge's alias says `cas-local-cluster pid=<pid>`) and removed on drop; what
//! a killed process left behind is removed by the next one that starts.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::Region;

/// Why the namespaces could not be set up or changed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A command failed.
    #[error("`{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its standard error, or why it could not run.
        message: String,
    },
    /// No free private subnet was found for the bridge.
    #[error("no free 10.x.y.0/24 subnet for the cluster's bridge")]
    NoSubnet,
}

/// The alias every bridge made here carries, followed by the owner's pid.
const ALIAS: &str = "cas-local-cluster pid=";

/// The `iptables` programs tried, in order: the default one, then the legacy back
/// end for kernels without nf_tables.
const IPTABLES: [&str; 2] = ["iptables", "iptables-legacy"];

/// Distinguishes the networks one process creates.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The namespaces, links and bridge of one local cluster's regions.
#[derive(Debug)]
pub struct RegionNetwork {
    bridge: String,
    host: Ipv4Addr,
    regions: Vec<RegionNet>,
    iptables: &'static str,
    kernel_latency: bool,
}

/// One region's namespace.
#[derive(Debug)]
struct RegionNet {
    region: Region,
    netns: String,
    ip: Ipv4Addr,
}

/// Runs `program args`, failing with its standard error.
fn run(program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetnsError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetnsError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `program args` inside namespace `netns`.
fn run_in(netns: &str, program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let mut all = vec!["netns", "exec", netns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl RegionNetwork {
    /// Whether this process may create namespaces (root, with `ip` and `iptables`).
    pub fn available() -> bool {
        run("ip", &["netns", "list"]).is_ok()
            && IPTABLES.iter().any(|p| run(p, &["--version"]).is_ok())
            && Command::new("id")
                .arg("-u")
                .output()
                .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    }

    /// Creates a bridge, and one namespace per region linked to it. With
    /// `latency`, the regions' round trips (`regions.md`) are put on the links when
    /// the kernel has `netem`.
    pub fn create(regions: &[Region], latency: bool) -> Result<Self, NetnsError> {
        remove_stale();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = free_subnet()?;
        // Interface names have at most 15 bytes.
        let tag = (pid << 8) ^ n;
        let bridge = format!("casb{tag:08x}");
        let host = Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 1);
        let mut net = RegionNetwork {
            bridge: bridge.clone(),
            host,
            regions: Vec::new(),
            iptables: "iptables",
            kernel_latency: false,
        };
        run("ip", &["link", "add", &bridge, "type", "bridge"])?;
        run(
            "ip",
            &[
                "link",
                "set",
                "dev",
                &bridge,
                "alias",
                &format!("{ALIAS}{pid}"),
            ],
        )?;
        run(
            "ip",
            &["addr", "add", &format!("{host}/24"), "dev", &bridge],
        )?;
        run("ip", &["link", "set", &bridge, "up"])?;
        for (i, region) in regions.iter().enumerate() {
            let netns = format!("cas-{pid}-{n}-{region}");
            let ip = Ipv4Addr::new(prefix[0], prefix[1], prefix[2], 10 + i as u8);
            let host_end = format!("casv{tag:08x}{i}");
            run("ip", &["netns", "add", &netns])?;
            net.regions.push(RegionNet {
                region: *region,
                netns: netns.clone(),
                ip,
            });
            run(
                "ip",
                &[
                    "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns",
                    &netns,
                ],
            )?;
            run("ip", &["link", "set", &host_end, "master", &bridge, "up"])?;
            run_in(
                &netns,
                "ip",
                &["addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            )?;
            run_in(&netns, "ip", &["link", "set", "eth0", "up"])?;
            run_in(&netns, "ip", &["link", "set", "lo", "up"])?;
        }
        net.iptables = net.pick_iptables()?;
        if latency {
            match net.add_latency() {
                Ok(()) => net.kernel_latency = true,
                Err(e) => tracing::warn!(
                    "no kernel latency on the regions' links ({e}): the nodes inject it themselves"
                ),
            }
        }
        Ok(net)
    }

    /// The host's address on the bridge (where the S3 server and clients listen).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host
    }

    /// The address of `region`'s namespace.
    pub fn ip_of(&self, region: Region) -> Option<Ipv4Addr> {
        self.region(region).map(|r| r.ip)
    }

    /// The name of `region`'s namespace (`/run/netns/<name>`).
    pub fn netns(&self, region: Region) -> Option<&str> {
        self.region(region).map(|r| r.netns.as_str())
    }

    /// Whether the kernel delays the links (otherwise the nodes must).
    pub fn kernel_latency(&self) -> bool {
        self.kernel_latency
    }

    /// A command running `program` inside `region`'s namespace.
    pub fn command(&self, region: Region, program: &std::path::Path) -> Option<Command> {
        let r = self.region(region)?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &r.netns]).arg(program);
        Some(c)
    }

    /// Cuts `isolated` regions off from every other region (their packets are
    /// dropped both ways; the host stays reachable); an empty list heals every cut.
    pub fn cut(&self, isolated: &[Region]) -> Result<(), NetnsError> {
        for r in &self.regions {
            run_in(&r.netns, self.iptables, &["-F", "INPUT"])?;
            run_in(&r.netns, self.iptables, &["-F", "OUTPUT"])?;
        }
        for r in self.regions.iter().filter(|r| isolated.contains(&r.region)) {
            for other in self.regions.iter().filter(|o| o.region != r.region) {
                let ip = other.ip.to_string();
                run_in(
                    &r.netns,
                    self.iptables,
                    &["-A", "INPUT", "-s", &ip, "-j", "DROP"],
                )?;
                run_in(
                    &r.netns,
                    self.iptables,
                    &["-A", "OUTPUT", "-d", &ip, "-j", "DROP"],
                )?;
            }
        }
        Ok(())
    }

    fn region(&self, region: Region) -> Option<&RegionNet> {
        self.regions.iter().find(|r| r.region == region)
    }

    /// The first of [`IPTABLES`] that can add a rule in our namespaces.
    fn pick_iptables(&self) -> Result<&'static str, NetnsError> {
        let Some(netns) = self.regions.first().map(|r| r.netns.as_str()) else {
            return Ok("iptables");
        };
        let mut last = None;
        for program in IPTABLES {
            let probe = ["-A", "OUTPUT", "-d", "192.0.2.1", "-j", "DROP"];
            match run_in(netns, program, &probe) {
                Ok(_) => {
                    run_in(netns, program, &["-F", "OUTPUT"])?;
                    return Ok(program);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("two programs tried"))
    }

    /// Delays each namespace's packets by half the round trip to their destination's
    /// region: a `prio` qdisc whose first band (undelayed) takes everything but the
    /// other regions' addresses, which go to bands with `netem`.
    fn add_latency(&self) -> Result<(), NetnsError> {
        let bands = (self.regions.len() + 1).max(3).to_string();
        let priomap: Vec<&str> = vec!["0"; 16];
        for r in &self.regions {
            let mut root = vec![
                "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "prio", "bands", &bands,
                "priomap",
            ];
            root.extend_from_slice(&priomap);
            run_in(&r.netns, "tc", &root)?;
            for (band, other) in self
                .regions
                .iter()
                .filter(|o| o.region != r.region)
                .enumerate()
            {
                let class = format!("1:{}", band + 2);
                let handle = format!("{}:", band + 20);
                let delay = format!("{}ms", r.region.round_trip(other.region).as_millis() / 2);
                run_in(
                    &r.netns,
                    "tc",
                    &[
                        "qdisc", "add", "dev", "eth0", "parent", &class, "handle", &handle,
                        "netem", "delay", &delay,
                    ],
                )?;
                run_in(
                    &r.netns,
                    "tc",
                    &[
                        "filter",
                        "add",
                        "dev",
                        "eth0",
                        "parent",
                        "1:",
                        "protocol",
                        "ip",
                        "prio",
                        "1",
                        "u32",
                        "match",
                        "ip",
                        "dst",
                        &format!("{}/32", other.ip),
                        "flowid",
                        &class,
                    ],
                )?;
            }
        }
        Ok(())
    }
}

impl Drop for RegionNetwork {
    fn drop(&mut self) {
        for r in &self.regions {
            // Deleting a namespace deletes its end of the veth pair, and so the pair.
            let _ = run("ip", &["netns", "delete", &r.netns]);
        }
        let _ = run("ip", &["link", "delete", &self.bridge]);
    }
}

/// A 10.x.y.0/24 subnet no interface of the host uses.
fn free_subnet() -> Result<[u8; 3], NetnsError> {
    let used = run("ip", &["-o", "-4", "addr", "show"])?;
    for _ in 0..64 {
        let b: [u8; 2] = rand::random();
        let prefix = [10, 64 + b[0] % 160, b[1]];
        let needle = format!(" {}.{}.{}.", prefix[0], prefix[1], prefix[2]);
        if !used.contains(&needle) {
            return Ok(prefix);
        }
    }
    Err(NetnsError::NoSubnet)
}

/// Removes the bridges and namespaces of local clusters whose process is gone.
fn remove_stale() {
    let Ok(links) = run("ip", &["-o", "link", "show", "type", "bridge"]) else {
        return;
    };
    for line in links.lines() {
        let Some((_, pid)) = line.split_once(ALIAS) else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<u32>() else {
            continue;
        };
        if alive(pid) {
            continue;
        }
        if let Some(name) = line.split(':').nth(1).map(str::trim) {
            let name = name.split('@').next().unwrap_or(name);
            let _ = run("ip", &["link", "delete", name]);
        }
        if let Ok(all) = run("ip", &["netns", "list"]) {
            let prefix = format!("cas-{pid}-");
            for ns in all.lines().filter_map(|l| l.split_whitespace().next()) {
                if ns.starts_with(&prefix) {
                    let _ = run("ip", &["netns", "delete", ns]);
                }
            }
        }
    }
}
