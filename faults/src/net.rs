//! Hosts in network namespaces, made and removed by this module alone: one bridge in the
//! root namespace holding the gateway address, one veth per host. Nothing else on the machine
//! is touched: the subnet is one no interface here uses, every name carries a tag of ours.
//!
//! Faults are nftables rules in each host's own namespace (table `basalt_faults`): a packet
//! from a blocked peer is dropped on input, so a cut link loses packets silently, as a real
//! network split does, and connections already open stall rather than reset. Clients reach
//! every host from the root namespace (the gateway's address), which no rule names: a
//! partition separates nodes from each other, not from their clients.

use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

/// One host: a namespace and its address.
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: String,
    pub ip: String,
    link: String,
}

pub struct Net {
    bridge: String,
    gateway: String,
    pub hosts: Vec<Host>,
    /// Directed pairs of host indexes (from, to): `to` drops what `from` sends.
    blocked: BTreeSet<(usize, usize)>,
    /// Percent of packets between hosts dropped at random.
    loss: u8,
    /// The delay proxies, by link (from, to), once `proxy_links` made them.
    proxies: Vec<((usize, usize), crate::proxy::Proxy)>,
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

/// Removes what an earlier run left behind (its process gone: killed before it could clean
/// up): namespaces named `basalt-j<pid>-<tag>-n<i>` and the links and bridge named after them.
fn sweep() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix("basalt-j") else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(pid), Some(tag)) = (parts.next(), parts.next()) else {
            continue;
        };
        let live = pid
            .parse::<u32>()
            .is_ok_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if live {
            continue;
        }
        let _ = ip(&["netns", "del", name]);
        if let Some(i) = parts.next().and_then(|n| n.strip_prefix('n')) {
            let _ = ip(&["link", "del", &format!("bj{tag}v{i}")]);
        }
        let _ = ip(&["link", "del", &format!("bj{tag}")]);
    }
}

/// A /24 in 10.233.0.0/16 that no interface of this machine has an address in.
fn free_subnet() -> Result<u8> {
    let used = ip(&["-o", "-4", "addr", "show"])?;
    let start = (std::process::id() % 200) as u8;
    (0..200u8)
        .map(|k| start.wrapping_add(k) % 200 + 20)
        .find(|s| !used.contains(&format!("10.233.{s}.")))
        .ok_or_else(|| anyhow!("no free 10.233.x.0/24 subnet"))
}

impl Net {
    /// Builds `n` hosts. Needs root (CAP_NET_ADMIN), `ip` and `nft`; the error says which is
    /// missing. A half-built network is removed before returning the error.
    pub fn create(n: usize) -> Result<Net> {
        sweep();
        let subnet = free_subnet()?;
        // Unique among live runs: the subnet is one no interface has, the pid one no other
        // live process has. Fixed-width hex keeps names apart and interface names short.
        let pid = std::process::id();
        let tag = format!("{:04x}{subnet:02x}", pid & 0xffff);
        let mut net = Net {
            bridge: format!("bj{tag}"),
            gateway: format!("10.233.{subnet}.1"),
            hosts: (1..=n)
                .map(|i| Host {
                    netns: format!("basalt-j{pid}-{tag}-n{i}"),
                    ip: format!("10.233.{subnet}.{}", 10 + i),
                    link: format!("bj{tag}v{i}"),
                })
                .collect(),
            blocked: BTreeSet::new(),
            loss: 0,
            proxies: Vec::new(),
        };
        if let Err(e) = net.build() {
            net.destroy();
            return Err(
                e.context("creating network namespaces (needs root, iproute2 and nftables)")
            );
        }
        Ok(net)
    }

    fn build(&self) -> Result<()> {
        ip(&["link", "add", &self.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.gateway),
            "dev",
            &self.bridge,
        ])?;
        ip(&["link", "set", &self.bridge, "up"])?;
        for h in &self.hosts {
            ip(&["netns", "add", &h.netns])?;
            ip(&["-n", &h.netns, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", &h.link, "type", "veth", "peer", "name", "eth0", "netns", &h.netns,
            ])?;
            ip(&["link", "set", &h.link, "master", &self.bridge, "up"])?;
            ip(&[
                "-n",
                &h.netns,
                "addr",
                "add",
                &format!("{}/24", h.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &h.netns, "link", "set", "eth0", "up"])?;
            self.nft(
                h,
                "add table inet basalt_faults\n\
                 add chain inet basalt_faults input { type filter hook input priority 0; policy accept; }\n",
            )?;
        }
        Ok(())
    }

    fn nft(&self, h: &Host, script: &str) -> Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &h.netns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nft")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {}: {}",
                h.netns,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// The hosts' rules, rewritten from `blocked` and `loss`.
    fn sync(&self) -> Result<()> {
        for (to, h) in self.hosts.iter().enumerate() {
            let mut script = String::from("flush chain inet basalt_faults input\n");
            let from: Vec<&str> = self
                .blocked
                .iter()
                .filter(|(_, t)| *t == to)
                .map(|(f, _)| self.hosts[*f].ip.as_str())
                .collect();
            if !from.is_empty() {
                script += &format!(
                    "add rule inet basalt_faults input ip saddr {{ {} }} drop\n",
                    from.join(", ")
                );
            }
            if self.loss > 0 {
                let peers: Vec<&str> = self
                    .hosts
                    .iter()
                    .filter(|p| p.ip != h.ip)
                    .map(|p| p.ip.as_str())
                    .collect();
                script += &format!(
                    "add rule inet basalt_faults input ip saddr {{ {} }} numgen random mod 100 < {} drop\n",
                    peers.join(", "),
                    self.loss
                );
            }
            self.nft(h, &script)?;
        }
        Ok(())
    }

    /// Drops every packet host `from` sends to host `to` (0-based), added to those already
    /// dropped.
    pub fn block(&mut self, pairs: &[(usize, usize)]) -> Result<()> {
        self.blocked
            .extend(pairs.iter().copied().filter(|(f, t)| f != t));
        self.sync()
    }

    /// Drops `percent` of the packets between hosts, at random.
    pub fn lose(&mut self, percent: u8) -> Result<()> {
        self.loss = percent.min(100);
        self.sync()
    }

    /// Puts a delay proxy on every link to the hosts' `port` (gRPC between nodes): host A's
    /// connections to B's port go to the proxy for A→B instead (an nftables redirect in A's
    /// namespace). Delay 0 until `delay` sets one.
    pub async fn proxy_links(&mut self, port: u16) -> Result<()> {
        for (a, from) in self.hosts.clone().iter().enumerate() {
            let mut script = String::from(
                "add chain inet basalt_faults out_nat { type nat hook output priority -100; policy accept; }\n",
            );
            for (b, to) in self.hosts.clone().iter().enumerate() {
                if a == b {
                    continue;
                }
                let target: std::net::SocketAddr = format!("{}:{port}", to.ip).parse()?;
                let p = crate::proxy::Proxy::start(&from.netns, &from.ip, target).await?;
                script += &format!(
                    "add rule inet basalt_faults out_nat ip daddr {} tcp dport {port} meta mark != {} dnat ip to {}\n",
                    to.ip,
                    crate::proxy::MARK,
                    p.listen
                );
                self.proxies.push(((a, b), p));
            }
            self.nft(from, &script)?;
        }
        Ok(())
    }

    /// Every link's delay and jitter (ms), through the proxies.
    pub fn delay(&mut self, ms: u64, jitter_ms: u64) -> Result<()> {
        if self.proxies.is_empty() {
            bail!("no delay proxies on this network (proxy_links)");
        }
        for (_, p) in &self.proxies {
            p.delay.set(ms, jitter_ms);
        }
        Ok(())
    }

    /// The delay and jitter (ms) of the links from host `a` to host `b` and back (indexes
    /// into `hosts`), through their proxies: the two far ends of a long link.
    pub fn delay_link(&mut self, a: usize, b: usize, ms: u64, jitter_ms: u64) -> Result<()> {
        let mut found = false;
        for ((from, to), p) in &self.proxies {
            if (*from, *to) == (a, b) || (*from, *to) == (b, a) {
                p.delay.set(ms, jitter_ms);
                found = true;
            }
        }
        if !found {
            bail!("no delay proxy between hosts {a} and {b} (proxy_links)");
        }
        Ok(())
    }

    /// Every host reaches every other again, with no loss.
    pub fn heal(&mut self) -> Result<()> {
        self.blocked.clear();
        self.loss = 0;
        for (_, p) in &self.proxies {
            p.delay.set(0, 0);
        }
        self.sync()
    }

    /// The gateway address: where the hosts see clients (in the root namespace) come from.
    pub fn gateway(&self) -> &str {
        &self.gateway
    }

    /// Removes everything `create` made; safe to call twice.
    pub fn destroy(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["link", "del", &h.link]);
            let _ = ip(&["netns", "del", &h.netns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
        self.hosts.clear();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}
