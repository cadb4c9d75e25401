//! One `basalt serve` process, started and harmed from outside as an operator or a failing
//! machine would: SIGKILL (nothing flushed), SIGSTOP/SIGCONT (a hung process), a restart on
//! the same data dir and addresses, and, if it was started able to, a skewed wall clock.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian's `faketime` package puts libfaketime, by architecture.
const LIBFAKETIME: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
];

/// The libfaketime this machine has, if any.
pub fn libfaketime() -> Option<&'static str> {
    LIBFAKETIME
        .iter()
        .copied()
        .find(|p| std::path::Path::new(p).exists())
}

#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: u64,
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// Where each start's stderr goes (`node<id>-<start>.log`).
    pub log_dir: PathBuf,
    /// The namespace it runs in, if any (`ip netns exec`, which execs in place: the pid and
    /// its signals stay the node's).
    pub netns: Option<String>,
    /// HTTP and gRPC listen addresses; port 0 picks one on the first start, kept after.
    pub http: String,
    pub grpc: String,
    /// Empty for a node that joined with a token (it learns the key's digest from the
    /// cluster).
    pub root_key: String,
    /// Further `serve` flags (`--join` is added by the cluster for a first start).
    pub args: Vec<String>,
    /// Start under libfaketime, its offset read from this file, so the clock can be skewed
    /// while the node runs.
    pub clock_file: Option<PathBuf>,
    /// Extra environment (e.g. `BASALT_FAULT` for a binary built with fault points).
    pub env: Vec<(String, String)>,
    /// Start under libfiu (its preload libraries, as `fiu-run` sets them up), its control
    /// FIFOs named from this prefix, so disk operations can be made to fail while it runs.
    pub fiu: Option<PathBuf>,
}

/// libfiu's preload libraries, as Debian's `fiu-utils` installs them: the one that opens the
/// control FIFOs and the one that wraps the POSIX calls.
pub const LIBFIU_RUN: &str = "/usr/lib/fiu/fiu_run_preload.so";
pub const LIBFIU_POSIX: &str = "/usr/lib/fiu/fiu_posix_preload.so";

/// The exit status of a node that stopped itself on a fatal storage error (fail-stop).
pub const FAIL_STOP: i32 = 70;

pub struct Node {
    pub cfg: NodeConfig,
    child: Option<Child>,
    paused: bool,
    starts: usize,
    /// How the process ended each time it ended by itself (not by `kill` or `stop`), and
    /// whether that was expected (a fail-stop while its disk was failing).
    pub exits: Vec<(String, bool)>,
    /// Its disk is failing now (`fail_disk`).
    disk_failing: bool,
    /// `http://ip:port` once started.
    pub url: String,
}

impl Node {
    pub fn new(cfg: NodeConfig) -> Node {
        Node {
            cfg,
            child: None,
            paused: false,
            starts: 0,
            exits: Vec::new(),
            disk_failing: false,
            url: String::new(),
        }
    }

    pub fn id(&self) -> u64 {
        self.cfg.id
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// Starts the process with `extra` flags (e.g. `--join` on a first start) and waits until
    /// its HTTP port answers.
    pub async fn start(&mut self, extra: &[String], timeout: Duration) -> Result<()> {
        if self.alive() {
            bail!("node {} is already running", self.cfg.id);
        }
        std::fs::create_dir_all(&self.cfg.log_dir)?;
        let endpoint_file = self.cfg.data_dir.join("endpoint.json");
        let _ = std::fs::remove_file(&endpoint_file);
        self.starts += 1;
        let log = File::create(
            self.cfg
                .log_dir
                .join(format!("node{}-{}.log", self.cfg.id, self.starts)),
        )?;
        // `ip netns exec` execs the node in place: the pid is the node's.
        let mut cmd = match &self.cfg.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.cfg.binary);
                c
            }
            None => Command::new(&self.cfg.binary),
        };
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.cfg.data_dir)
            .args(["--http", &self.cfg.http, "--grpc", &self.cfg.grpc])
            .args(["--node-id", &self.cfg.id.to_string()])
            .args(
                Some(&self.cfg.root_key)
                    .filter(|k| !k.is_empty())
                    .map(|k| ["--root-key", k.as_str()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.cfg.args)
            .args(extra)
            .env("NO_COLOR", "1")
            .envs(self.cfg.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // The node dies with whoever started it (a harness killed by its own timeout leaves no
        // node behind, stopped or running). `ip netns exec` execs in place, so this holds.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // Preloaded libraries, all of them (libfiu's and libfaketime may be wanted together;
        // `fiu-run` would set LD_PRELOAD to its own alone).
        let mut preload: Vec<String> = Vec::new();
        if let Some(prefix) = &self.cfg.fiu {
            if !std::path::Path::new(LIBFIU_POSIX).exists() {
                bail!("disk faults need libfiu (Debian packages fiu-utils and libfiu0)");
            }
            preload.extend([LIBFIU_RUN.to_string(), LIBFIU_POSIX.to_string()]);
            cmd.env("FIU_CTRL_FIFO", prefix).env("FIU_ENABLE", "");
        }
        if let Some(file) = &self.cfg.clock_file {
            if !file.exists() {
                self.skew(0)?;
            }
            let lib = libfaketime()
                .ok_or_else(|| anyhow!("clock skew needs libfaketime (Debian package faketime)"))?;
            preload.push(lib.to_string());
            cmd.env("FAKETIME_TIMESTAMP_FILE", file)
                // Re-read the offset at most once a second, not at every clock read.
                .env("FAKETIME_CACHE_DURATION", "1")
                // Only the wall clock is skewed: timers and timeouts run on the monotonic
                // clock, which a skewed machine's kernel keeps steady too.
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        if !preload.is_empty() {
            cmd.env("LD_PRELOAD", preload.join(" "));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", self.cfg.binary))?;
        self.child = Some(child);
        self.paused = false;
        let deadline = Instant::now() + timeout;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()?;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                self.exits.push((format!("{status} while starting"), false));
                bail!(
                    "node {} exited with {status} (log in {})",
                    self.cfg.id,
                    self.cfg.log_dir.display()
                );
            }
            if let Ok(text) = std::fs::read_to_string(&endpoint_file) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if let (Some(h), Some(g)) = (v["http"].as_str(), v["grpc"].as_str()) {
                        self.url = h.to_string();
                        let ok = http
                            .get(format!("{h}/v1/health/version"))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if ok {
                            // Restarts keep the addresses, as a real node's would.
                            self.cfg.http = h.trim_start_matches("http://").to_string();
                            self.cfg.grpc = g.to_string();
                            return Ok(());
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("node {} did not become ready in {timeout:?}", self.cfg.id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&mut self, sig: i32) -> Result<()> {
        let pid = self.signalable()?;
        // SAFETY: kill(2) on our own child's pid, which `alive` has just seen unreaped.
        if unsafe { libc::kill(pid, sig) } != 0 {
            bail!("kill({pid}, {sig}): {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// kill -9: nothing is flushed, nothing is said to the peers.
    pub fn kill(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)?;
        if let Some(mut c) = self.child.take() {
            c.wait()?;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGTERM, waited for (up to `timeout`, then SIGKILL).
    pub fn stop(&mut self, timeout: Duration) -> Result<()> {
        if self.paused {
            self.resume()?;
        }
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        while let Some(c) = self.child.as_mut() {
            if c.try_wait()?.is_some() {
                self.child = None;
                return Ok(());
            }
            if Instant::now() > deadline {
                return self.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// SIGSTOP: the process stays, answering nothing.
    pub fn pause(&mut self) -> Result<()> {
        self.signal(libc::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    pub fn resume(&mut self) -> Result<()> {
        self.signal(libc::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// Running (a paused process counts). A process found ended is reaped and its exit
    /// recorded in `exits`.
    pub fn alive(&mut self) -> bool {
        let Some(c) = self.child.as_mut() else {
            return false;
        };
        match c.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                let expected = self.disk_failing && status.code() == Some(FAIL_STOP);
                self.exits.push((status.to_string(), expected));
                self.child = None;
                self.paused = false;
                false
            }
            Err(_) => false,
        }
    }

    /// Running and not paused: it may answer.
    pub fn up(&mut self) -> bool {
        self.alive() && !self.paused
    }

    /// Sets the wall clock's offset from the real time, in seconds (libfaketime re-reads it
    /// within a second). Only for a node started with a clock file.
    pub fn skew(&self, seconds: i64) -> Result<()> {
        let file = self
            .cfg
            .clock_file
            .as_ref()
            .ok_or_else(|| anyhow!("node {} was not started under libfaketime", self.cfg.id))?;
        // Replaced whole (written aside, renamed): libfaketime exits the process if it ever
        // reads the file empty.
        let aside = file.with_extension("next");
        std::fs::write(&aside, format!("{seconds:+}\n"))?;
        std::fs::rename(&aside, file)?;
        Ok(())
    }

    /// Makes the node's fsync/fdatasync calls fail (each with `probability`), through libfiu.
    /// The node should stop itself (exit status `FAIL_STOP`) rather than go on.
    pub fn fail_disk(&mut self, probability: f64) -> Result<()> {
        let pid = self.signalable()?;
        self.disk_failing = true;
        self.fiu_ctrl(
            pid,
            &format!("enable_random name=posix/io/sync/*,probability={probability}"),
        )
    }

    /// The disk works again (for a node still running; a stopped one restarts healthy).
    pub fn heal_disk(&mut self) -> Result<()> {
        // (libfiu refuses to disable a point that is not enabled.)
        if self.disk_failing && self.alive() {
            let pid = self.signalable()?;
            self.fiu_ctrl(pid, "disable name=posix/io/sync/*")?;
        }
        self.disk_failing = false;
        Ok(())
    }

    /// Its pid, if it is running. Reaps it first if it ended: a reaped pid may belong to
    /// another process by now.
    fn signalable(&mut self) -> Result<i32> {
        if !self.alive() {
            bail!("node {} is not running", self.cfg.id);
        }
        Ok(self.pid().expect("alive"))
    }

    /// One `fiu-ctrl` command to the node. fiu-ctrl exits 0 even when it failed (it says so
    /// on its output), and blocks for ever on the FIFOs of a process that is gone or paused:
    /// it gets 5 s, and its output is read.
    fn fiu_ctrl(&self, pid: i32, command: &str) -> Result<()> {
        let prefix = self
            .cfg
            .fiu
            .as_ref()
            .ok_or_else(|| anyhow!("node {} was not started under libfiu", self.cfg.id))?;
        let mut child = Command::new("fiu-ctrl")
            .arg("-f")
            .arg(prefix)
            .args(["-c", command, &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running fiu-ctrl")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "fiu-ctrl {command}: no answer from node {} in 5 s",
                    self.cfg.id
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = child.wait_with_output()?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() || said.to_lowercase().contains("error") {
            bail!("fiu-ctrl {command}: {}", said.trim());
        }
        Ok(())
    }

    /// Every start's log, in order.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for k in 1..=self.starts {
            let p = self
                .cfg
                .log_dir
                .join(format!("node{}-{k}.log", self.cfg.id));
            out += &std::fs::read_to_string(p).unwrap_or_default();
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
