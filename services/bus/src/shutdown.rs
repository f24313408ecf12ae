//! One shutdown signal for everything a service runs (its HTTP server, its consumers).

use tokio::sync::watch;

/// Fires the signal once.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

/// A clonable signal; each clone's [`Signal::wait`] completes once the trigger fired (or was
/// dropped, which also means nobody can keep the service running).
#[derive(Debug, Clone)]
pub struct Signal(watch::Receiver<bool>);

impl Signal {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

pub fn signal() -> (Trigger, Signal) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Signal(rx))
}

/// Runs a service's front end (`serve`, given the signal it must stop on) beside its consumer
/// until `shutdown`, then stops both: the server drains its requests, the consumer its lanes.
pub async fn run_beside<S, F>(
    consumer: crate::Consumer,
    serve: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: FnOnce(Signal) -> F,
    F: Future<Output = std::io::Result<()>>,
{
    let (trigger, stop) = signal();
    let group = consumer.group().to_owned();
    let consuming = tokio::spawn(consumer.run(stop.clone().wait()));
    let fire = async move {
        shutdown.await;
        trigger.fire();
    };
    let (served, ()) = tokio::join!(serve(stop), fire);
    if let Ok(Err(e)) = consuming.await {
        tracing::error!(%group, error = %e, "consumer failed");
    }
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let (trigger, signal) = signal();
        let a = tokio::spawn(signal.clone().wait());
        let b = tokio::spawn(signal.wait());
        trigger.fire();
        a.await.unwrap();
        b.await.unwrap();
    }
}
