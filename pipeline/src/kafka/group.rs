//! Consumer-group helpers for the tasks that read a topic one message at a time
//! (subject events, erasure requests) and commit their own positions.

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{error, warn};

use crate::config::Settings;

/// A consumer of `topic` in consumer group `group`, with `[kafka.properties]`,
/// committing its offsets itself. `None` (logged) when librdkafka refuses it.
pub fn group_consumer(settings: &Settings, group: &str, topic: &str) -> Option<StreamConsumer> {
    let consumer: StreamConsumer = match super::client::consumer(&settings.kafka, group).create() {
        Ok(c) => c,
        Err(e) => {
            error!(error = %e, %topic, "consumer cannot start; the topic is not processed");
            return None;
        }
    };
    if let Err(e) = consumer.subscribe(&[topic]) {
        error!(error = %e, %topic, "consumer cannot subscribe");
        return None;
    }
    Some(consumer)
}

/// Commit `offset + 1` of `partition` as the group's position (where a restart
/// begins reading; the lake decides what is done).
pub fn commit_position(consumer: &StreamConsumer, topic: &str, partition: i32, offset: i64) {
    let mut position = TopicPartitionList::new();
    if position
        .add_partition_offset(topic, partition, Offset::Offset(offset + 1))
        .is_ok()
    {
        if let Err(e) = consumer.commit(&position, CommitMode::Async) {
            warn!(error = %e, %topic, "group offset commit failed (the lake decides)");
        }
    }
}
