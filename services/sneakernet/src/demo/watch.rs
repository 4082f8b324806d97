//! Following one order with WatchOrder, printing each change, and a kiosk's provisioning
//! progress as a bar per phase.

use anyhow::{Context, anyhow, bail};
use sneakernet_proto::orders::v1 as pb;
use sneakernet_proto::orders::v1::order_service_client::OrderServiceClient;
use tonic::transport::Channel;

use super::describe::state_name;
use super::{Narrator, ORDER_WAIT};
use crate::client::{self, authed};

/// One WatchOrder stream, read until the order reaches a wanted state (or shows a wanted
/// write protection).
pub(super) struct OrderWatch {
    stream: tonic::Streaming<pb::WatchOrderResponse>,
    orders: OrderServiceClient<Channel>,
    user: String,
    order_id: String,
    last: Option<i32>,
    /// The provisioning phase shown now, with its bar.
    progress: Option<(i32, indicatif::ProgressBar)>,
}

impl OrderWatch {
    pub(super) async fn open(
        orders: &mut OrderServiceClient<Channel>,
        user: &str,
        order_id: &str,
    ) -> anyhow::Result<Self> {
        let stream = client::call(
            "watch the order",
            orders.watch_order(authed(
                pb::WatchOrderRequest {
                    order_id: order_id.to_owned(),
                },
                user,
            )?),
        )
        .await?;
        Ok(Self {
            stream,
            orders: orders.clone(),
            user: user.to_owned(),
            order_id: order_id.to_owned(),
            last: None,
            progress: None,
        })
    }

    /// Prints every change until the order is in `wanted`; an error when the stream ends
    /// first, the order ends elsewhere, or [`ORDER_WAIT`] passes (saying where GetOrder sees
    /// the order then).
    pub(super) async fn until(
        &mut self,
        narrator: &Narrator,
        wanted: pb::OrderState,
    ) -> anyhow::Result<pb::Order> {
        let what = format!(
            "order {} to be {}",
            self.order_id,
            state_name(wanted as i32)
        );
        self.until_with(narrator, &what, |change| change.state == wanted as i32)
            .await
    }

    /// Prints every change until the order shows write protection `on` (its drive
    /// confirmed); errors as [`OrderWatch::until`].
    pub(super) async fn until_write_protected(
        &mut self,
        narrator: &Narrator,
        on: bool,
    ) -> anyhow::Result<pb::Order> {
        let what = format!(
            "order {} to show write protection {}",
            self.order_id,
            if on { "on" } else { "off" }
        );
        self.until_with(narrator, &what, |change| {
            change
                .order
                .as_ref()
                .is_some_and(|o| o.write_protected == on)
        })
        .await
    }

    async fn until_with(
        &mut self,
        narrator: &Narrator,
        what: &str,
        done: impl Fn(&pb::WatchOrderResponse) -> bool,
    ) -> anyhow::Result<pb::Order> {
        match tokio::time::timeout(ORDER_WAIT, self.follow(narrator, &done, what)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let now = match self.current().await {
                    Ok(order) => format!(
                        "GetOrder says it is {}: {:?}",
                        state_name(order.state),
                        order.state_reason
                    ),
                    Err(error) => format!("GetOrder failed too: {error:#}"),
                };
                bail!(
                    "waited {} for {what}; {now}",
                    humantime::format_duration(ORDER_WAIT)
                )
            }
        }
    }

    async fn follow(
        &mut self,
        narrator: &Narrator,
        done: &impl Fn(&pb::WatchOrderResponse) -> bool,
        what: &str,
    ) -> anyhow::Result<pb::Order> {
        loop {
            let change = self
                .stream
                .message()
                .await
                .map_err(|s| anyhow!("watch the order: {}", client::describe(&s)))?
                .with_context(|| format!("the watch ended before {what}"))?;
            let finished = done(&change);
            let order = change.order.context("a watch message carries no order")?;
            if let Some(progress) = &change.progress {
                self.show(progress);
            }
            if self.last != Some(change.state) {
                self.last = Some(change.state);
                if let Some((_, bar)) = self.progress.take() {
                    bar.finish();
                }
                narrator.detail(format!(
                    "{:<16} {}",
                    state_name(change.state),
                    if change.reason.is_empty() {
                        order.state_reason.as_str()
                    } else {
                        change.reason.as_str()
                    }
                ));
            }
            if finished {
                return Ok(order);
            }
            if matches!(
                pb::OrderState::try_from(change.state),
                Ok(pb::OrderState::Failed
                    | pb::OrderState::Refunded
                    | pb::OrderState::Cancelled
                    | pb::OrderState::Expired
                    | pb::OrderState::Closed)
            ) {
                bail!(
                    "the order ended {} instead: {}",
                    state_name(change.state),
                    order.state_reason
                );
            }
        }
    }

    /// Moves the bar of the progress' phase (a new bar when the phase changed).
    fn show(&mut self, progress: &pb::ProvisioningProgress) {
        if self.progress.as_ref().map(|(phase, _)| *phase) != Some(progress.phase) {
            if let Some((_, bar)) = self.progress.take() {
                bar.finish();
            }
            let phase = super::describe::phase_name(progress.phase);
            let bar = indicatif::ProgressBar::new(progress.bytes_total);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "             {prefix:<11} [{bar:30}] {bytes}/{total_bytes}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(phase);
            self.progress = Some((progress.phase, bar));
        }
        if let Some((_, bar)) = &self.progress {
            bar.set_length(progress.bytes_total.max(progress.bytes_done));
            bar.set_position(progress.bytes_done);
        }
    }

    /// The order as GetOrder answers it now.
    async fn current(&mut self) -> anyhow::Result<pb::Order> {
        client::call(
            "get the order",
            self.orders.get_order(authed(
                pb::GetOrderRequest {
                    order_id: self.order_id.clone(),
                },
                &self.user,
            )?),
        )
        .await?
        .order
        .context("get the order: the answer carries no order")
    }
}
