//! Kafka in: the readings consumer thread (`source`) and the consumer-group helpers
//! of the tasks that read a topic one message at a time (`group`).

pub mod group;
pub mod source;

pub use source::{Chunk, Event, KafkaSource, OffsetsReply, StopHandle, REPLAY_HEADER};
