//! A running bookie: storage opened and replayed, journal and background threads started, the
//! gRPC server listening; and its orderly shutdown.

use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use magnetar_proto::bookie::bookie_server::BookieServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::config::BookieConfig;
use crate::disk::disk_space;
use crate::error::{BookieError, Result};
use crate::journal::{Journal, JournalSettings};
use crate::ledger::registration::{Registration, RegistrationConfig};
use crate::server::{BookieCore, BookieService};
use crate::storage::{LedgerStorage, ReplayReport};

/// Largest gRPC message either way: many entries per add request, up to the entry size limit.
fn max_message_bytes(config: &BookieConfig) -> usize {
    (64 * 1024 * 1024).max(config.max_entry_size_bytes + 1024 * 1024)
}

/// Bound on commands queued for the journal (each command is one add request).
const JOURNAL_QUEUE_COMMANDS: usize = 4096;

/// A bookie serving on its address until [`RunningBookie::shutdown`].
pub struct RunningBookie {
    core: Arc<BookieCore>,
    local_addr: SocketAddr,
    replay: ReplayReport,
    server_stop: Option<oneshot::Sender<()>>,
    server_task: Option<JoinHandle<std::result::Result<(), tonic::transport::Error>>>,
    background: Vec<std::thread::JoinHandle<()>>,
    /// Dropping these wakes the compactor and disk monitor so they exit.
    wakeups: Vec<std::sync::mpsc::Sender<()>>,
    compactor_wakeup: std::sync::mpsc::Sender<()>,
    /// The bookie's entry in the metadata store, when it was given one.
    registration: Option<Registration>,
    _directory_lock: File,
}

impl RunningBookie {
    /// Opens (and replays) the data directory and starts serving.
    pub async fn start(config: BookieConfig) -> Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|source| {
            BookieError::io(format!("creating {}", config.data_dir.display()), source)
        })?;
        let directory_lock = lock_directory(&config)?;
        let open_config = config.clone();
        let (storage, replay) =
            tokio::task::spawn_blocking(move || LedgerStorage::open(open_config))
                .await
                .map_err(|error| {
                    BookieError::io("opening storage", std::io::Error::other(error.to_string()))
                })??;

        let journal = Journal::start(
            JournalSettings {
                dir: config.journal_dir(),
                file_size_bytes: config.journal_file_size_bytes,
                max_group_bytes: config.journal_max_group_bytes,
                max_group_wait: config.journal_max_group_wait,
            },
            replay.next_journal_file_id,
            storage.fenced_ledgers(),
            storage.clone(),
            JOURNAL_QUEUE_COMMANDS,
        )?;

        let mut background = Vec::new();
        let spawn = |name: &str, work: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(work)
                .map_err(|source| BookieError::io(format!("starting the {name} thread"), source))
        };
        let flusher_storage = storage.clone();
        background.push(spawn(
            "flusher",
            Box::new(move || {
                crate::thread_priority::lower_current_thread();
                flusher_storage.run_flusher()
            }),
        )?);
        let (compactor_wakeup, compactor_receiver) = std::sync::mpsc::channel();
        let compactor_storage = storage.clone();
        background.push(spawn(
            "compactor",
            Box::new(move || {
                crate::thread_priority::lower_current_thread();
                compactor_storage.run_compactor(compactor_receiver)
            }),
        )?);
        let (disk_wakeup, disk_receiver) = std::sync::mpsc::channel::<()>();
        let disk_storage = storage.clone();
        background.push(spawn(
            "disk-monitor",
            Box::new(move || monitor_disk(disk_storage, disk_receiver)),
        )?);

        let core = Arc::new(BookieCore::new(config.clone(), storage, journal));
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| BookieError::io(format!("listening on {}", config.listen), source))?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BookieError::io("reading the listen address", source))?;
        let incoming = TcpListenerStream::new(listener).map(|connection| {
            if let Ok(stream) = &connection {
                // Small acknowledgements must not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
            }
            connection
        });
        let limit = max_message_bytes(&config);
        let service = BookieServer::new(BookieService::new(core.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        let (server_stop, stop_signal) = oneshot::channel::<()>();
        let server_task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_signal.await;
                }),
        );
        info!(
            address = %local_addr,
            data_dir = %config.data_dir.display(),
            replayed_entries = replay.entries,
            "bookie serving"
        );
        // Registered only once serving, so a client never picks a bookie it cannot reach.
        let registration = if config.meta_endpoints.is_empty() {
            None
        } else {
            let address = if config.advertise_address.is_empty() {
                local_addr.to_string()
            } else {
                config.advertise_address.clone()
            };
            let storage = core.storage.clone();
            let registered = Registration::start(
                RegistrationConfig {
                    meta_endpoints: config.meta_endpoints.clone(),
                    address,
                    rack: config.rack.clone(),
                    data_dir: config.data_dir.clone(),
                    session_ttl: config.registration_ttl,
                    refresh_interval: (config.registration_ttl / 2)
                        .max(std::time::Duration::from_millis(50)),
                },
                move || storage.read_only_state().is_read_only(),
            )
            .await
            .map_err(|error| {
                BookieError::io(
                    "registering in the metadata store",
                    std::io::Error::other(error.to_string()),
                )
            })?;
            Some(registered)
        };
        Ok(Self {
            core,
            local_addr,
            replay,
            server_stop: Some(server_stop),
            server_task: Some(server_task),
            background,
            wakeups: vec![disk_wakeup],
            compactor_wakeup,
            registration,
            _directory_lock: directory_lock,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the journal replay found at start.
    pub fn replay_report(&self) -> &ReplayReport {
        &self.replay
    }

    /// The storage, for tests and tools that flush or compact on demand.
    pub fn storage(&self) -> &Arc<LedgerStorage> {
        &self.core.storage
    }

    /// Asks the compactor for a pass now rather than at its next interval.
    pub fn request_compaction(&self) {
        let _ = self.compactor_wakeup.send(());
    }

    /// Stops taking adds, lets every queued add become durable and be answered, ends the add
    /// streams, stops the server, flushes the write cache, and joins every thread.
    pub async fn shutdown(mut self) -> Result<()> {
        info!("bookie shutting down");
        // Leave the list of bookies first, so no new ensemble picks a stopping bookie.
        if let Some(registration) = self.registration.take() {
            registration.stop().await;
        }
        self.core.storage.begin_stop();
        // Adds queued before the stop are answered: nothing acknowledged is lost, nothing queued
        // is left unanswered.
        if let Err(error) = self.core.journal_barrier().await {
            warn!(%error, "journal barrier at shutdown failed");
        }
        self.core.close_add_streams();
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.server_task.take() {
            // Streams a client keeps open would hold a graceful stop forever: bound it.
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                warn!("open client streams did not close within 5 s; closing them");
                task.abort();
            }
        }
        let core = self.core.clone();
        let background = std::mem::take(&mut self.background);
        self.wakeups.clear();
        let (compactor_wakeup, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(
            &mut self.compactor_wakeup,
            compactor_wakeup,
        ));
        tokio::task::spawn_blocking(move || {
            core.journal.shutdown();
            for thread in background {
                let _ = thread.join();
            }
            core.storage.flush()
        })
        .await
        .map_err(|error| {
            BookieError::io("shutting down", std::io::Error::other(error.to_string()))
        })??;
        info!("bookie stopped");
        Ok(())
    }
}

/// Takes an exclusive lock on the data directory so two bookies never share it.
fn lock_directory(config: &BookieConfig) -> Result<File> {
    let path = config.data_dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| BookieError::io(format!("opening {}", path.display()), source))?;
    // SAFETY: flock on a descriptor we own.
    let status = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if status != 0 {
        return Err(BookieError::io(
            format!(
                "{} is in use by another bookie; stop it or choose another --data-dir",
                config.data_dir.display()
            ),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(file)
}

fn monitor_disk(storage: Arc<LedgerStorage>, stop: std::sync::mpsc::Receiver<()>) {
    let interval = storage.config.disk_check_interval;
    loop {
        match disk_space(&storage.config.data_dir) {
            Ok((free, _)) => storage
                .read_only_state()
                .observe_free_space(free, storage.config.min_free_space_bytes),
            Err(error) => warn!(%error, "cannot read free disk space"),
        }
        match stop.recv_timeout(interval) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            _ => return,
        }
    }
}
