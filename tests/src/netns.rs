//! A private network of hosts, one Linux network namespace each, that a test can cut apart and heal
//! (needs root and `ip`/`nft`: packages `iproute2`, `nftables`, installed on first use when missing).
//!
//! [`Network::new`] builds, for one test:
//! - a bridge in the test's own (root) namespace, `mb<pid hex>x<n>`, holding `10.77.<s>.1/24`,
//!   where `<s>` is a subnet no other interface of the machine uses (another test run included);
//! - per host, a namespace `mesh-<pid>-<n>-<i>` with `lo` and `eth0` up, `eth0` being one end of a
//!   veth pair whose other end (`mv<pid hex>x<n>h<i>`) is a port of the bridge, and the address
//!   `10.77.<s>.<i + 2>/24`.
//!
//! Nodes run inside a namespace ([`crate::NodeBuilder::host`]: `ip netns exec <ns> ...`) and reach
//! each other over the bridge; the test's clients, in the root namespace, reach every node through
//! the bridge's address, whatever is cut. [`Network::cut`] installs, in each host's namespace, an
//! nftables table `inet mesh_cut` dropping every packet to and from the hosts of the other groups
//! (input and output hooks, TCP and UDP alike: HTTP and gossip); [`Network::heal`] deletes those
//! tables.
//!
//! Dropping the [`Network`] (also when the test panics) deletes the veth pairs, the namespaces
//! (their nftables tables go with them) and the bridge. Declare it before the nodes that run
//! in it, so that they are killed first. What a killed test process left behind (names carry its
//! pid) is deleted by the next [`Network::new`].

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};

use crate::util::{command_exists, install_if_missing, next_unique};

/// The first two octets of every test network.
const NET: [u8; 2] = [10, 77];
/// Prefix of the namespaces: `mesh-<pid>-<n>-<i>`.
const NS_PREFIX: &str = "mesh-";
/// Prefix of the bridges: `mb<pid hex>x<n>`.
const BRIDGE_PREFIX: &str = "mb";
/// The nftables table that cuts a host off.
const CUT_TABLE: &str = "inet mesh_cut";

/// One host of a [`Network`]: a network namespace and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    namespace: String,
    ip: Ipv4Addr,
    /// The end of its veth pair in the test's namespace.
    veth: String,
}

impl Host {
    /// The namespace's name (for `ip netns exec`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The host's address on the network.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
}

/// A test's private network (see the module docs). Panics rather than skips when it cannot be
/// built: CI runs as root and the harness installs what is missing.
#[derive(Debug)]
pub struct Network {
    bridge: String,
    hosts: Vec<Host>,
    /// The hosts whose namespace holds a [`CUT_TABLE`].
    cut: Vec<usize>,
}

impl Network {
    /// A network of `hosts` hosts; panics if it cannot be built.
    pub fn new(hosts: usize) -> Network {
        match Self::try_new(hosts) {
            Ok(net) => net,
            Err(e) => {
                panic!("cannot build a test network of namespaces (needs root, ip and nft): {e:#}")
            }
        }
    }

    /// As [`Network::new`], returning the error.
    pub fn try_new(hosts: usize) -> anyhow::Result<Network> {
        assert!((1..=200).contains(&hosts), "1 to 200 hosts, not {hosts}");
        ensure_tools()?;
        remove_stale();
        let (pid, n) = (std::process::id(), next_unique());
        let tag = format!("{pid:x}x{n}");
        let mut net = Network {
            bridge: format!("{BRIDGE_PREFIX}{tag}"),
            hosts: Vec::new(),
            cut: Vec::new(),
        };
        check_ifname(&net.bridge)?;
        run("ip", &["link", "add", &net.bridge, "type", "bridge"])?;
        let subnet = net.claim_subnet()?;
        run("ip", &["link", "set", &net.bridge, "up"])?;
        for i in 0..hosts {
            let host = Host {
                namespace: format!("{NS_PREFIX}{pid}-{n}-{i}"),
                ip: Ipv4Addr::new(NET[0], NET[1], subnet, u8::try_from(i + 2)?),
                veth: format!("mv{tag}h{i}"),
            };
            let veth = host.veth.as_str();
            check_ifname(veth)?;
            run("ip", &["netns", "add", &host.namespace])?;
            // Pushed now, so that a failure below still deletes the namespace.
            net.hosts.push(host.clone());
            let ns = host.namespace.as_str();
            let cidr = format!("{}/24", host.ip);
            run(
                "ip",
                &[
                    "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
                ],
            )?;
            run("ip", &["link", "set", veth, "master", &net.bridge, "up"])?;
            run("ip", &["-n", ns, "addr", "add", &cidr, "dev", "eth0"])?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Gives the bridge `10.77.<s>.1/24` for an `<s>` no other interface has an address in, and
    /// returns `<s>`. Two test processes may pick the same `<s>` at the same moment: each then sees
    /// the other's address after adding its own, and both move on to another.
    fn claim_subnet(&self) -> anyhow::Result<u8> {
        let start = std::process::id() as usize + next_unique() as usize * 41;
        for attempt in 0..250 {
            let s = u8::try_from((start + attempt * 7) % 250 + 1)?;
            let prefix = format!("{}.{}.{s}.0/24", NET[0], NET[1]);
            if !run("ip", &["-o", "-4", "addr", "show", "to", &prefix])?
                .trim()
                .is_empty()
            {
                continue;
            }
            let mine = format!("{}.{}.{s}.1/24", NET[0], NET[1]);
            run("ip", &["addr", "add", &mine, "dev", &self.bridge])?;
            let users = run("ip", &["-o", "-4", "addr", "show", "to", &prefix])?;
            if users.lines().filter(|l| !l.trim().is_empty()).count() == 1 {
                return Ok(s);
            }
            run("ip", &["addr", "del", &mine, "dev", &self.bridge])?;
        }
        bail!("no free subnet in {}.{}.0.0/16", NET[0], NET[1])
    }

    /// The bridge's name (in the test's namespace).
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// Host `i` (from 0).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Cuts every host of each group off from every host of every other group, both ways (groups
    /// name hosts by index), replacing any earlier cut. Hosts in no group are not touched. Panics
    /// on failure.
    pub fn cut(&mut self, groups: &[&[usize]]) {
        if let Err(e) = self.try_cut(groups) {
            panic!("cutting {groups:?} failed: {e:#}");
        }
    }

    /// As [`Network::cut`], returning the error.
    pub fn try_cut(&mut self, groups: &[&[usize]]) -> anyhow::Result<()> {
        let mut seen = Vec::new();
        for &i in groups.iter().flat_map(|g| g.iter()) {
            if i >= self.hosts.len() || seen.contains(&i) {
                bail!("host {i} is out of range or in two groups");
            }
            seen.push(i);
        }
        self.try_heal()?;
        for (g, group) in groups.iter().enumerate() {
            let others: Vec<String> = groups
                .iter()
                .enumerate()
                .filter(|(o, _)| *o != g)
                .flat_map(|(_, other)| other.iter().map(|&i| self.hosts[i].ip.to_string()))
                .collect();
            if others.is_empty() {
                continue;
            }
            let set = others.join(", ");
            let script = format!(
                "table {CUT_TABLE} {{\n\
                 chain input {{ type filter hook input priority 0; policy accept; \
                 ip saddr {{ {set} }} drop; }}\n\
                 chain output {{ type filter hook output priority 0; policy accept; \
                 ip daddr {{ {set} }} drop; }}\n\
                 }}\n"
            );
            for &i in group.iter() {
                nft_in(&self.hosts[i].namespace, &script)
                    .with_context(|| format!("installing in host {i}:\n{script}"))?;
                self.cut.push(i);
            }
        }
        Ok(())
    }

    /// Removes every cut: the network is whole again. Panics on failure.
    pub fn heal(&mut self) {
        if let Err(e) = self.try_heal() {
            panic!("healing the network failed: {e:#}");
        }
    }

    /// As [`Network::heal`], returning the error.
    pub fn try_heal(&mut self) -> anyhow::Result<()> {
        while let Some(&i) = self.cut.last() {
            nft_in(
                &self.hosts[i].namespace,
                &format!("delete table {CUT_TABLE}\n"),
            )?;
            self.cut.pop();
        }
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both; the kernel frees a namespace (with its
        // nftables tables) some time after its last process and socket are gone, so the pair
        // is not left to go with it.
        for host in &self.hosts {
            let veth = run("ip", &["link", "del", &host.veth]);
            let ns = run("ip", &["netns", "del", &host.namespace]);
            for e in [veth.err(), ns.err()].into_iter().flatten() {
                eprintln!("mesh-tests: {e:#}");
            }
        }
        if let Err(e) = run("ip", &["link", "del", &self.bridge]) {
            eprintln!("mesh-tests: {e:#}");
        }
    }
}

/// Whether a TCP connection from `from` (a host, or the test's own namespace for `None`) to
/// `to` is established within `within`: the way to check that a cut is in force. `Ok(false)`
/// when it times out (packets dropped), an error when it is refused or fails otherwise.
/// Blocks the calling thread (use `tokio::task::spawn_blocking` from async code).
pub fn tcp_connects(from: Option<&Host>, to: SocketAddr, within: Duration) -> anyhow::Result<bool> {
    let Some(host) = from else {
        return match TcpStream::connect_timeout(&to, within) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(false),
            Err(e) => Err(anyhow!("connecting to {to}: {e}")),
        };
    };
    // bash's /dev/tcp, inside the namespace, under coreutils' timeout (exit 124 on timeout).
    let out = Command::new("ip")
        .args(["netns", "exec", &host.namespace, "timeout"])
        .arg(format!("{:.3}", within.as_secs_f64()))
        .args(["bash", "-c"])
        .arg(format!("exec 3<>/dev/tcp/{}/{}", to.ip(), to.port()))
        .stdin(Stdio::null())
        .output()
        .context("running ip netns exec ... bash")?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(124) => Ok(false),
        _ => Err(anyhow!(
            "connecting from {} to {to}: {} {}",
            host.namespace,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    }
}

fn check_ifname(name: &str) -> anyhow::Result<()> {
    if name.len() > 15 {
        bail!("interface name {name} is longer than 15 bytes");
    }
    Ok(())
}

/// Runs a command, returning its stdout; an error (with its stderr) if it fails.
fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} exited with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `nft -f -` with `script` inside namespace `ns`.
fn nft_in(ns: &str, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip netns exec ... nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(script.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft -f - in {ns} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Installs Debian's `iproute2` and `nftables` when `ip` or `nft` is missing (see
/// [`install_if_missing`]).
fn ensure_tools() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    let present = || command_exists("ip") && command_exists("nft");
    install_if_missing(&INSTALLED, &["iproute2", "nftables"], present).map_err(|e| anyhow!(e))
}

/// Deletes the namespaces and bridges of test processes that no longer run (killed before their
/// [`Network`] was dropped). Best effort.
fn remove_stale() {
    let dead = |pid: &str| pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists();
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            let Some(rest) = name.strip_prefix(NS_PREFIX) else {
                continue;
            };
            if dead(rest.split('-').next().unwrap_or("")) {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    // Bridges `mb<pid hex>x<n>` and veths `mv<pid hex>x<n>h<i>` (listed as `<name>@<peer>`).
    for (kind, prefix) in [("veth", "mv"), ("bridge", BRIDGE_PREFIX)] {
        let Ok(list) = run("ip", &["-o", "link", "show", "type", kind]) else {
            continue;
        };
        for name in list.lines().filter_map(|l| l.split(": ").nth(1)) {
            let name = name.split('@').next().unwrap_or(name);
            let Some((pid_hex, rest)) = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.split_once('x'))
            else {
                continue;
            };
            let n = rest.split('h').next().unwrap_or("");
            let pid = u32::from_str_radix(pid_hex, 16).map(|p| p.to_string());
            if n.parse::<u64>().is_ok() && pid.is_ok_and(|p| dead(&p)) {
                let _ = run("ip", &["link", "del", name]);
            }
        }
    }
}
