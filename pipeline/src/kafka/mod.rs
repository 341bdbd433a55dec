//! Kafka: the readings consumer thread (`source`), the consumer-group helpers of
//! the tasks that read a topic one message at a time (`group`), and the one
//! builder of every client's configuration (`client`).

pub mod client;
pub mod group;
pub mod source;

pub use source::{
    Chunk, Event, KafkaSource, OffsetsReply, StopHandle, Subscription, REPLAY_HEADER,
};
