//! Calls: ringing, presence and the call log (docs/calls.md). The desk
//! drives each call; [`CallDesk`] is how signaling and the server API reach
//! it.

mod api;
mod bus;
mod desk;
mod metrics;
mod view;

use std::collections::HashMap;
use std::sync::Arc;

use callgate_metering::{BillingTerms, Meter};
use callgate_signaling::calls::{CallObserver, CallParticipant, MediaGate, MediaUsage, Refusal};
use callgate_signaling::devices::{DeviceId, Devices};
use callgate_signaling::protocol::PresenceStatus;
use callgate_signaling::ringing::{CallControl, CallRequest};
use callgate_signaling::token::{BillingClaims, KeyRing};
use tokio::sync::{mpsc, oneshot};

pub use api::{CallsDoc, routes, unavailable_routes};
pub use bus::Bus;
pub use desk::{AFTER_RING, DEFAULT_RING_TIMEOUT};
use desk::{CreateError, Created, Desk, DeskInput, NewCall};
pub use metrics::CallMetrics;

/// The handle of the call desk's task.
#[derive(Clone)]
pub struct CallDesk {
    inputs: mpsc::UnboundedSender<DeskInput>,
}

impl CallDesk {
    /// Starts the desk. Its tokens are signed with `key_name` of `keys`.
    pub fn start(
        meter: Meter,
        metrics: CallMetrics,
        devices: Devices,
        keys: KeyRing,
        key_name: Option<String>,
        plans: HashMap<String, BillingTerms>,
        bus: Option<Bus>,
    ) -> CallDesk {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(bus) = &bus {
            tokio::spawn(bus.clone().listen(tx.clone()));
        }
        let desk = Desk::new(
            meter,
            metrics,
            devices,
            keys,
            key_name,
            Arc::new(plans),
            bus,
        );
        tokio::spawn(desk.run(rx));
        CallDesk { inputs: tx }
    }

    /// The rooms of the calls this node drives (none once the desk has
    /// stopped).
    pub async fn call_rooms(&self) -> Vec<String> {
        let (tx, rx) = oneshot::channel();
        self.send(DeskInput::Rooms(tx));
        rx.await.unwrap_or_default()
    }

    /// Node `node` of the cluster is gone: its share of every identity's
    /// presence is removed.
    pub fn node_lost(&self, node: &str) {
        self.send(DeskInput::NodeLost(node.to_owned()));
    }

    async fn create(&self, call: NewCall) -> Result<Created, CreateError> {
        let (tx, rx) = oneshot::channel();
        self.inputs
            .send(DeskInput::Create(Box::new(call), tx))
            .map_err(|_| CreateError::Ledger(callgate_metering::MeterError::ShuttingDown))?;
        rx.await
            .map_err(|_| CreateError::Ledger(callgate_metering::MeterError::ShuttingDown))?
    }

    async fn presence(&self, identities: Vec<String>) -> Option<Vec<(String, PresenceStatus)>> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(DeskInput::Presence(identities, tx)).ok()?;
        rx.await.ok()
    }

    fn send(&self, input: DeskInput) {
        let _ = self.inputs.send(input);
    }
}

impl CallControl for CallDesk {
    fn device_connected(&self, identity: &str, device: DeviceId) {
        self.send(DeskInput::DeviceConnected(identity.to_owned(), device));
    }
    fn device_disconnected(&self, identity: &str, device: DeviceId) {
        self.send(DeskInput::DeviceDisconnected(identity.to_owned(), device));
    }
    fn request(&self, identity: &str, device: DeviceId, request: CallRequest) {
        self.send(DeskInput::Request {
            identity: identity.to_owned(),
            device,
            request,
        });
    }
}

/// The desk watches rooms to see members join (an answer) and leave (a
/// hang-up); it never refuses or holds anyone.
impl CallObserver for CallDesk {
    fn check(&self, _: &str, _: &str, _: Option<&BillingClaims>) -> Result<MediaGate, Refusal> {
        Ok(MediaGate::Open)
    }
    fn joined(&self, p: &CallParticipant) {
        self.send(DeskInput::Joined {
            room: p.room.clone(),
            identity: p.identity.clone(),
        });
    }
    fn media_connected(&self, _: &CallParticipant) {}
    fn left(&self, p: &CallParticipant, usage: MediaUsage) {
        self.send(DeskInput::Left {
            room: p.room.clone(),
            identity: p.identity.clone(),
            ended_by: usage.ended_by,
        });
    }
}
