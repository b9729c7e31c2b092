//! [`Client`]: connections to brokers (one gRPC channel per broker address), topic lookup and
//! partition metadata, and the backoff that reconnecting producers and consumers share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use magnetar_proto::broker::broker_client::BrokerClient;
use magnetar_proto::broker::{LookupRequest, PartitionedMetadataRequest};
use tonic::transport::{Channel, Endpoint};

use crate::consumer::{ConsumerBuilder, ReaderBuilder, SubscriptionType};
use crate::error::{ClientError, Result};
use crate::producer::ProducerBuilder;

/// Largest message the client accepts from a broker.
const MAX_DECODING_BYTES: usize = 256 << 20;

/// A connection to a Magnetar cluster through any of its brokers; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    /// Brokers asked for lookups, in order of preference.
    service_addresses: Vec<String>,
    channels: Mutex<HashMap<String, Channel>>,
}

/// Strips a `magnetar://`, `grpc://` or `http://` scheme: the rest is `host:port`.
fn host_and_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.trim_end_matches('/')
}

impl Client {
    /// Connects to a cluster through the brokers at `url`: `host:port`, optionally with a
    /// `magnetar://` scheme, or several separated by commas (each answers lookups for every
    /// topic; later ones are asked when earlier ones are down).
    pub async fn connect(url: &str) -> Result<Client> {
        let service_addresses: Vec<String> = url
            .split(',')
            .map(|part| host_and_port(part.trim()).to_string())
            .filter(|address| !address.is_empty())
            .collect();
        if service_addresses.is_empty() {
            return Err(ClientError::InvalidArgument(format!(
                "no broker address in {url:?}; use host:port"
            )));
        }
        let client = Client {
            inner: Arc::new(ClientInner {
                service_addresses,
                channels: Mutex::new(HashMap::new()),
            }),
        };
        client.service_broker().await?;
        Ok(client)
    }

    /// A connection to the first reachable service broker.
    async fn service_broker(&self) -> Result<(String, BrokerClient<Channel>)> {
        let mut last_error = None;
        for address in &self.inner.service_addresses {
            match self.broker(address).await {
                Ok(broker) => return Ok((address.clone(), broker)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(ClientError::Closed))
    }

    /// A producer on `topic`; configure it, then `create()`.
    pub fn producer(&self, topic: &str) -> ProducerBuilder {
        ProducerBuilder::new(self.clone(), topic)
    }

    /// A consumer of `subscription` on `topic`; configure it, then `subscribe()`.
    pub fn consumer(&self, topic: &str, subscription: &str) -> ConsumerBuilder {
        ConsumerBuilder::new(self.clone(), topic, subscription)
    }

    /// Subscribes with defaults: shorthand for `consumer(..).subscription_type(..).subscribe()`.
    pub async fn subscribe(
        &self,
        topic: &str,
        subscription: &str,
        subscription_type: SubscriptionType,
    ) -> Result<crate::Consumer> {
        self.consumer(topic, subscription)
            .subscription_type(subscription_type)
            .subscribe()
            .await
    }

    /// A reader (no durable subscription) on `topic`; configure it, then `create()`.
    pub fn reader(&self, topic: &str) -> ReaderBuilder {
        ReaderBuilder::new(self.clone(), topic)
    }

    /// A gRPC client for the broker at `address`, connecting on first use.
    pub(crate) async fn broker(&self, address: &str) -> Result<BrokerClient<Channel>> {
        let cached = self
            .inner
            .channels
            .lock()
            .ok()
            .and_then(|c| c.get(address).cloned());
        let channel = match cached {
            Some(channel) => channel,
            None => {
                let unreachable = |reason: String| ClientError::Unreachable {
                    address: address.to_string(),
                    reason,
                };
                let endpoint = Endpoint::from_shared(format!("http://{address}"))
                    .map_err(|error| unreachable(error.to_string()))?
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true);
                let channel = endpoint
                    .connect()
                    .await
                    .map_err(|error| unreachable(error.to_string()))?;
                if let Ok(mut channels) = self.inner.channels.lock() {
                    channels.insert(address.to_string(), channel.clone());
                }
                channel
            }
        };
        Ok(BrokerClient::new(channel)
            .max_decoding_message_size(MAX_DECODING_BYTES)
            .max_encoding_message_size(MAX_DECODING_BYTES))
    }

    /// Forgets the connection to `address` (after it failed), so the next use reconnects.
    pub(crate) fn drop_connection(&self, address: &str) {
        if let Ok(mut channels) = self.inner.channels.lock() {
            channels.remove(address);
        }
    }

    /// The address of the broker serving `topic`, and the topic's full name.
    pub(crate) async fn lookup(&self, topic: &str) -> Result<(String, String)> {
        let mut last_error = None;
        for address in &self.inner.service_addresses {
            match self.lookup_at(address, topic).await {
                Ok(found) => return Ok(found),
                // A broker that is down or stopping: ask the next one.
                Err(error) if error.is_retryable() => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or(ClientError::Closed))
    }

    async fn lookup_at(&self, address: &str, topic: &str) -> Result<(String, String)> {
        let address = address.to_string();
        let mut broker = self.broker(&address).await?;
        let response = broker
            .lookup(LookupRequest {
                topic: topic.to_string(),
            })
            .await
            .map_err(|status| {
                self.drop_connection(&address);
                ClientError::Unreachable {
                    address: address.clone(),
                    reason: status.message().to_string(),
                }
            })?
            .into_inner();
        if let Some(error) = response.error.filter(|error| error.code != 0) {
            return Err(ClientError::from_wire(&error));
        }
        Ok((response.broker_address, response.topic))
    }

    /// The partition count of `topic` (0: not partitioned).
    pub async fn partitions(&self, topic: &str) -> Result<u32> {
        let (address, mut broker) = self.service_broker().await?;
        let response = broker
            .get_partitioned_metadata(PartitionedMetadataRequest {
                topic: topic.to_string(),
            })
            .await
            .map_err(|status| {
                self.drop_connection(&address);
                ClientError::Unreachable {
                    address: address.clone(),
                    reason: status.message().to_string(),
                }
            })?
            .into_inner();
        if let Some(error) = response.error.filter(|error| error.code != 0) {
            return Err(ClientError::from_wire(&error));
        }
        Ok(response.partitions)
    }
}

/// Exponential backoff for reconnects: 50 ms doubling to 2 s.
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self {
            next: Duration::from_millis(50),
        }
    }

    pub(crate) fn reset(&mut self) {
        *self = Self::new();
    }

    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(2));
    }
}

/// The partition names of a topic with `partitions` partitions.
pub(crate) fn partition_names(topic: &str, partitions: u32) -> Vec<String> {
    (0..partitions)
        .map(|index| format!("{topic}-partition-{index}"))
        .collect()
}

/// Which partition a keyed message goes to: a stable hash of the key.
pub(crate) fn partition_for_key(key: &str, partitions: usize) -> usize {
    // FNV-1a: stable across processes and versions, so a key always lands on one partition.
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in key.as_bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as usize % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_reduce_to_host_and_port() {
        assert_eq!(
            host_and_port("magnetar://localhost:6660/"),
            "localhost:6660"
        );
        assert_eq!(host_and_port("127.0.0.1:6660"), "127.0.0.1:6660");
    }

    #[test]
    fn a_key_always_picks_the_same_partition_and_keys_spread() {
        assert_eq!(partition_for_key("k", 7), partition_for_key("k", 7));
        let used: std::collections::HashSet<usize> = (0..100)
            .map(|i| partition_for_key(&format!("key-{i}"), 4))
            .collect();
        assert_eq!(used.len(), 4);
    }
}
