//! Webhooks: the changes the store recorded become deliveries
//! ([`outbox`]), each a run of the built-in handler `webhook` that posts
//! one event's body ([`body`]) to its URL, signed ([`post`]), or
//! publishes it to an MQTT broker ([`publish`]); and
//! alerts ([`alerts`]), incidents that open and recover; [`task`] runs
//! both on each node.

pub(crate) mod alerts;
pub(crate) mod body;
pub(crate) mod outbox;
pub(crate) mod post;
pub(crate) mod publish;
pub(crate) mod task;
