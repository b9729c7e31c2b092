//! The Rust client library: producers, consumers and readers over the broker's gRPC protocol.
//! It depends only on `magnetar-proto`, so a user's program links nothing of the servers.
