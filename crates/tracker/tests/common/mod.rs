//! A tracker served on 127.0.0.1 for the tests, stopped on request.
#![allow(dead_code)] // each test crate uses its own part

pub mod machines;
pub mod torrents;

/// The administrator's handle on the data directory (what the CLI opens).
pub fn admin_db(dir: &Path) -> (swarmbak_tracker::sqlite::Sqlite, swarmbak_tracker::org::Org) {
    (
        swarmbak_tracker::sqlite::Sqlite::open(dir).unwrap().0,
        swarmbak_tracker::org::Org::open(dir).unwrap(),
    )
}

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use swarmbak_tracker::{Tracker, TrackerClient, TrackerConfig};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct Server {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// A private tracker (a recovery recipient, changes another database handle writes
    /// seen within 50 ms).
    pub async fn private(dir: &Path) -> Server {
        Server::private_with(dir, |_| {}).await
    }

    /// [`Server::private`] with `tweak` applied to its configuration after.
    pub async fn private_with(dir: &Path, tweak: impl FnOnce(&mut TrackerConfig)) -> Server {
        Server::start(dir, |c| {
            c.open = false;
            c.recovery_recipients = vec!["age1recoveryrecipientfortests".into()];
            c.reload_every = Duration::from_millis(50);
            tweak(c);
        })
        .await
    }

    pub async fn start(dir: &Path, tweak: impl FnOnce(&mut TrackerConfig)) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Server::start_on(listener, dir, tweak).await
    }

    pub async fn start_on(
        listener: TcpListener,
        dir: &Path,
        tweak: impl FnOnce(&mut TrackerConfig),
    ) -> Server {
        let mut cfg = TrackerConfig::new(dir);
        // These tests are of the BitTorrent and directory endpoints: an open tracker.
        // The private tracker's tests run the real binary (crates/swarmbak/tests).
        cfg.open = true;
        tweak(&mut cfg);
        let addr = listener.local_addr().unwrap();
        let tracker = Tracker::open(cfg).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tracker
                .serve_until(listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> TrackerClient {
        TrackerClient::new(&self.url()).unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("server stops")
            .unwrap();
    }
}
