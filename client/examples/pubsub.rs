//! Publish a few keyed messages and read them back through a Key_Shared subscription.
//!
//! Start Magnetar first (`./scripts/run.sh`, or `magnetar standalone`), then:
//!
//! ```sh
//! cargo run -p magnetar-client --example pubsub [SERVICE_URL]
//! ```

use std::time::Duration;

use magnetar_client::{Client, InitialPosition, OutgoingMessage, SubscriptionType};

#[tokio::main]
async fn main() -> Result<(), magnetar_client::ClientError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6660".into());
    let client = Client::connect(&url).await?;
    let topic = "persistent://public/default/example-orders";

    // Subscribe first, from the earliest message, so nothing published below is missed.
    let consumer = client
        .consumer(topic, "example")
        .subscription_type(SubscriptionType::KeyShared)
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await?;

    let producer = client.producer(topic).create().await?;
    for (index, customer) in ["ada", "grace", "ada", "linus"].iter().enumerate() {
        let message = OutgoingMessage::new(format!("order {index}"))
            .with_key(*customer)
            .with_property("source", "example");
        let id = producer.send(message).await?;
        println!("sent order {index} for {customer} as {id}");
    }

    while let Some(message) = consumer.receive_timeout(Duration::from_secs(5)).await? {
        println!(
            "received {:?} for {} (id {})",
            String::from_utf8_lossy(&message.payload),
            message.key.as_deref().unwrap_or("-"),
            message.id
        );
        consumer.ack(&message).await?;
    }
    Ok(())
}
