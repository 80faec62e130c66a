//! The two event streams: each has its queue, its routing keys and its row in the read side's progress.

/// A stream of events about one kind of aggregate, carried by one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Orders,
    Products,
}

impl Stream {
    pub const ALL: [Stream; 2] = [Self::Orders, Self::Products];

    /// Its name in the read side's progress (`sync_state.stream`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Products => "products",
        }
    }

    /// The binding of its queue on the topic exchange: every routing key of its aggregate.
    pub fn binding(self) -> &'static str {
        match self {
            Self::Orders => "order.*",
            Self::Products => "product.*",
        }
    }

    /// The routing key of the watermark the relay sends down this stream's queue.
    pub fn watermark_routing_key(self) -> &'static str {
        match self {
            Self::Orders => "order.watermark",
            Self::Products => "product.watermark",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventType;

    /// A topic binding `aggregate.*` matches exactly the keys with that first word.
    fn matches(binding: &str, routing_key: &str) -> bool {
        let prefix = binding.strip_suffix('*').expect("bindings end in *");
        routing_key.strip_prefix(prefix).is_some_and(|rest| !rest.is_empty() && !rest.contains('.'))
    }

    #[test]
    fn every_event_reaches_the_queue_of_its_stream_and_no_other() {
        for event_type in EventType::ALL {
            for stream in Stream::ALL {
                let routed = match event_type.routing_key() {
                    Some(key) => matches(stream.binding(), key),
                    None => matches(stream.binding(), stream.watermark_routing_key()),
                };
                let expected = event_type.stream().is_none_or(|own| own == stream);
                assert_eq!(routed, expected, "{event_type:?} on {stream:?}");
            }
        }
    }
}
