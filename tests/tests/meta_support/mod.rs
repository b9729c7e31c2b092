//! A group of real `magnetar meta` processes for the metadata store's tests.

use std::path::PathBuf;
use std::time::Duration;

use magnetar_meta::MetaClient;
use magnetar_tests::{free_port, wait_until_async, MagnetarProcess};

pub struct MetaGroup {
    _root: tempfile::TempDir,
    pub endpoints: Vec<String>,
    data_dirs: Vec<PathBuf>,
    peers: String,
    processes: Vec<Option<MagnetarProcess>>,
}

impl MetaGroup {
    /// Starts `size` nodes (ids 1..=size) on free loopback ports.
    pub fn start(size: usize) -> Result<MetaGroup, Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let endpoints: Vec<String> = (0..size)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let peers = endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| format!("{}={endpoint}", index + 1))
            .collect::<Vec<_>>()
            .join(",");
        let data_dirs = (1..=size)
            .map(|id| root.path().join(format!("meta-{id}")))
            .collect();
        let mut group = MetaGroup {
            _root: root,
            endpoints,
            data_dirs,
            peers,
            processes: Vec::new(),
        };
        for id in 1..=size as u64 {
            let process = group.spawn(id)?;
            group.processes.push(Some(process));
        }
        Ok(group)
    }

    fn spawn(&self, id: u64) -> std::io::Result<MagnetarProcess> {
        let index = (id - 1) as usize;
        let id_text = id.to_string();
        let data_dir = self.data_dirs[index].display().to_string();
        MagnetarProcess::start(&[
            "meta",
            "--id",
            &id_text,
            "--data-dir",
            &data_dir,
            "--listen",
            &self.endpoints[index],
            "--peers",
            &self.peers,
        ])
    }

    pub fn client(&self) -> Result<MetaClient, magnetar_meta::MetaError> {
        MetaClient::new(&self.endpoints)
    }

    /// SIGKILLs a node.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut process) = self.processes[(id - 1) as usize].take() {
            process.kill();
        }
    }

    pub fn restart(&mut self, id: u64) -> std::io::Result<()> {
        let process = self.spawn(id)?;
        self.processes[(id - 1) as usize] = Some(process);
        Ok(())
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.processes[(id - 1) as usize].is_some()
    }

    /// SIGTERM every node; true when all exited cleanly.
    pub fn terminate_all(&mut self) -> bool {
        let mut clean = true;
        for process in self.processes.iter_mut() {
            if let Some(mut process) = process.take() {
                clean &= process.terminate();
            }
        }
        clean
    }

    /// The leader every running node agrees on.
    pub async fn leader(&self, timeout: Duration) -> Result<u64, String> {
        wait_until_async("an agreed leader", timeout, || async move {
            let mut seen = None;
            for (index, endpoint) in self.endpoints.iter().enumerate() {
                if !self.is_running(index as u64 + 1) {
                    continue;
                }
                let status = MetaClient::status_of(endpoint).await.ok()?;
                let leader = status.header.map_or(0, |h| h.leader_id);
                if leader == 0 || seen.is_some_and(|l| l != leader) {
                    return None;
                }
                seen = Some(leader);
            }
            seen.filter(|leader| self.is_running(*leader))
        })
        .await
    }

    /// Waits until a node has applied at least `revision`.
    #[allow(dead_code)] // Each test binary compiles this module; not all of them wait.
    pub async fn wait_for_revision(
        &self,
        id: u64,
        revision: u64,
        timeout: Duration,
    ) -> Result<(), String> {
        let endpoint = self.endpoints[(id - 1) as usize].clone();
        wait_until_async(
            &format!("node {id} at revision {revision}"),
            timeout,
            || {
                let endpoint = endpoint.clone();
                async move {
                    let status = MetaClient::status_of(&endpoint).await.ok()?;
                    (status.header.map_or(0, |h| h.revision) >= revision).then_some(())
                }
            },
        )
        .await
    }
}
