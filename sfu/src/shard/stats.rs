//! A participant's media as the shard knows it now, for the server API.

use super::Shard;
use crate::session::{LayerStats, ParticipantStats, PublishedStats, SfuError, SubscriptionStats};

impl Shard {
    pub(crate) fn participant_stats(
        &self,
        room_name: &str,
        identity: &str,
    ) -> Result<ParticipantStats, SfuError> {
        let room = self.rooms.get(room_name).ok_or(SfuError::RoomNotFound)?;
        let p = room.by_identity(identity)?;
        let mut subscriptions = Vec::new();
        let mut published = Vec::new();
        let mut producers: Vec<_> = room.producers.values().collect();
        producers.sort_by(|a, b| a.sid.cmp(&b.sid));
        for producer in producers {
            if producer.owner_sid == p.sid {
                let layers = producer
                    .layers
                    .iter()
                    .enumerate()
                    .map(|(i, layer)| LayerStats {
                        rid: layer.rid.clone(),
                        bitrate_bps: layer.bitrate,
                        width: layer.size.map(|(w, _)| w),
                        height: layer.size.map(|(_, h)| h),
                        subscribed: producer.dynacast.sent.get(i).copied().unwrap_or(false),
                    })
                    .collect();
                published.push(PublishedStats {
                    track_sid: producer.sid.clone(),
                    kind: producer.kind,
                    muted: producer.muted,
                    remb_bps: producer.remb_sent.map(|(bps, _)| bps),
                    layers,
                });
            }
            if let Some(c) = producer
                .consumers
                .iter()
                .find(|c| c.subscriber_sid == p.sid)
            {
                subscriptions.push(SubscriptionStats {
                    track_sid: producer.sid.clone(),
                    kind: producer.kind,
                    share_bps: c.share,
                    layer: c
                        .layer
                        .and_then(|i| producer.layers.get(i))
                        .map(|l| l.rid.clone()),
                    disabled: c.settings.disabled,
                    priority: c.settings.priority,
                    max_width: c.settings.max_width,
                    max_height: c.settings.max_height,
                });
            }
        }
        let downlink = p.subscriber.and_then(|id| self.transports.get(&id));
        Ok(ParticipantStats {
            sid: p.sid.clone(),
            identity: p.identity.clone(),
            connection_quality: p.quality.quality(),
            downlink_estimate_bps: downlink.and_then(|t| t.estimate),
            downlink_estimate_source: downlink.and_then(|t| t.estimate_source),
            subscriptions,
            published,
        })
    }
}
