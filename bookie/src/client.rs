//! A client for one bookie: typed calls over its gRPC service, checking every entry's CRC32C
//! on read. The ledger client (ensembles and quorums) builds on it.

use std::time::Duration;

use bytes::Bytes;
use magnetar_proto::bookie::bookie_client::BookieClient as GrpcClient;
use magnetar_proto::bookie::{
    AddRequest, AddResponse, DeleteLedgerRequest, Entry, ErrorCode, FenceRequest,
    GetBookieInfoRequest, GetBookieInfoResponse, ReadLacRequest, ReadRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::{Channel, Endpoint};
use tonic::Streaming;

use crate::entry::entry_checksum_ok;
use crate::error::{BookieError, Result};

/// Largest message the client sends or accepts.
const MAX_MESSAGE_BYTES: usize = 80 * 1024 * 1024;

/// A connection to one bookie. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct BookieClient {
    grpc: GrpcClient<Channel>,
    address: String,
}

/// An open AddEntries stream: send requests, read results as entries become durable.
pub struct AddStream {
    pub requests: mpsc::Sender<AddRequest>,
    pub responses: Streaming<AddResponse>,
}

/// A LAC answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LacReading {
    pub last_add_confirmed: i64,
    pub last_entry_id: i64,
    /// False when a long poll ended without the LAC passing the asked entry.
    pub advanced: bool,
}

fn transport(error: impl std::fmt::Display) -> BookieError {
    BookieError::Transport(error.to_string())
}

fn check(code: i32, message: String) -> Result<()> {
    match ErrorCode::try_from(code) {
        Ok(ErrorCode::Ok) => Ok(()),
        Ok(code) => Err(BookieError::Remote { code, message }),
        Err(_) => Err(BookieError::Transport(format!(
            "unknown error code {code}: {message}"
        ))),
    }
}

impl BookieClient {
    /// Connects to `address` (`host:port`).
    pub async fn connect(address: &str) -> Result<Self> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(transport)?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5));
        let channel = endpoint.connect().await.map_err(|error| {
            BookieError::Transport(format!("cannot reach bookie at {address}: {error}"))
        })?;
        let grpc = GrpcClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self {
            grpc,
            address: address.to_string(),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Opens a pipelined add stream with room for `queue` requests in flight on the client side.
    pub async fn open_add_stream(&self, queue: usize) -> Result<AddStream> {
        let (requests, receiver) = mpsc::channel(queue.max(1));
        let responses = self.add_entries_from(ReceiverStream::new(receiver)).await?;
        Ok(AddStream {
            requests,
            responses,
        })
    }

    /// Opens an add stream whose requests come from `requests`.
    pub async fn add_entries_from(
        &self,
        requests: impl Stream<Item = AddRequest> + Send + 'static,
    ) -> Result<Streaming<AddResponse>> {
        Ok(self
            .grpc
            .clone()
            .add_entries(requests)
            .await
            .map_err(transport)?
            .into_inner())
    }

    /// Reads entries `first..=last` (fewer if the bookie cuts the range), checking each CRC.
    pub async fn read(&self, ledger_id: u64, first: u64, last: u64) -> Result<Vec<Entry>> {
        self.read_with(ReadRequest {
            ledger_id,
            first_entry_id: first,
            last_entry_id: last,
            ..ReadRequest::default()
        })
        .await
    }

    /// Reads with every option of the request (fencing reads, byte caps).
    pub async fn read_with(&self, request: ReadRequest) -> Result<Vec<Entry>> {
        let response = self
            .grpc
            .clone()
            .read_entry(request)
            .await
            .map_err(transport)?
            .into_inner();
        check(response.code, response.message)?;
        for entry in &response.entries {
            if !entry_checksum_ok(entry) {
                return Err(BookieError::CrcMismatch {
                    ledger_id: entry.ledger_id,
                    entry_id: entry.entry_id,
                });
            }
        }
        Ok(response.entries)
    }

    /// The bookie's LAC for a ledger; with `wait_past`, a long poll of at most `timeout`.
    pub async fn read_lac(
        &self,
        ledger_id: u64,
        wait_past: Option<i64>,
        timeout: Duration,
    ) -> Result<LacReading> {
        let response = self
            .grpc
            .clone()
            .read_last_add_confirmed(ReadLacRequest {
                ledger_id,
                wait_past_entry_id: wait_past,
                timeout_ms: timeout.as_millis() as u64,
            })
            .await
            .map_err(transport)?
            .into_inner();
        let advanced = response.code != ErrorCode::Timeout as i32;
        if advanced {
            check(response.code, response.message)?;
        }
        Ok(LacReading {
            last_add_confirmed: response.last_add_confirmed,
            last_entry_id: response.last_entry_id,
            advanced,
        })
    }

    /// Fences a ledger; returns the bookie's (LAC, last entry id).
    pub async fn fence(&self, ledger_id: u64, writer_token: Bytes) -> Result<(i64, i64)> {
        let response = self
            .grpc
            .clone()
            .fence(FenceRequest {
                ledger_id,
                writer_token,
            })
            .await
            .map_err(transport)?
            .into_inner();
        check(response.code, response.message)?;
        Ok((response.last_add_confirmed, response.last_entry_id))
    }

    pub async fn delete_ledger(&self, ledger_id: u64) -> Result<()> {
        let response = self
            .grpc
            .clone()
            .delete_ledger(DeleteLedgerRequest { ledger_id })
            .await
            .map_err(transport)?
            .into_inner();
        check(response.code, response.message)
    }

    pub async fn info(&self) -> Result<GetBookieInfoResponse> {
        Ok(self
            .grpc
            .clone()
            .get_bookie_info(GetBookieInfoRequest {})
            .await
            .map_err(transport)?
            .into_inner())
    }
}
