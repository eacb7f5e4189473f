//! Machines enrolled through the tracker's real endpoint (`POST /api/v1/enroll`), for
//! the tests of per-machine requests.

use std::path::Path;

use swarmbak_metainfo::Metainfo;
use swarmbak_tracker::admin::{self, Actor, EnrollOptions};
use swarmbak_tracker::server::unix_now;
use swarmbak_tracker::trust::{from_b64, EnrollToken, PublishRecord, SigningKey};
use swarmbak_tracker::{ClientError, TrackerClient};

use super::{admin_db, torrents::torrent, Server};

/// An enrolled machine: its key, passkey and certificate.
pub struct M {
    pub key: SigningKey,
    pub passkey: String,
    pub certificate: Vec<u8>,
}

/// Enrols a machine named `name` (age recipient `age1<name>`).
pub async fn enrol(server: &Server, dir: &Path, name: &str) -> M {
    enrol_with(server, dir, name, EnrollOptions::default()).await
}

/// [`enrol`] with the administrator's options (`vip`, ...; `name` is set here).
pub async fn enrol_with(server: &Server, dir: &Path, name: &str, options: EnrollOptions) -> M {
    let (mut db, org) = admin_db(dir);
    let token = admin::create_token(
        &mut db,
        &org,
        Some(&server.url()),
        &EnrollOptions {
            name: name.into(),
            ..options
        },
        &Actor::cli(),
        unix_now(),
    )
    .unwrap();
    let token = EnrollToken::parse(&token).unwrap();
    let key = SigningKey::generate();
    let request = token.request(&key, format!("age1{name}"));
    let answer = server.client().enroll(&request).await.unwrap();
    M {
        key,
        passkey: answer.passkey,
        certificate: from_b64(&answer.certificate).unwrap(),
    }
}

/// A client of `server` under `m`'s passkey.
pub fn as_machine(server: &Server, m: &M) -> TrackerClient {
    server.client().with_passkey(&m.passkey)
}

/// Publishes snapshot `n` (`stripes` stripes) signed by `m`, as new: its info-hash.
pub async fn publish(server: &Server, m: &M, n: u32, stripes: u64) -> [u8; 20] {
    let tr = torrent(n, stripes);
    let ih = Metainfo::from_bytes(&tr).unwrap().info_hash();
    let record = PublishRecord {
        infohash: ih,
        machine: m.key.public(),
        copies: 2,
        published: unix_now(),
    }
    .sign(&m.key);
    let p = as_machine(server, m)
        .publish_signed(&tr, &record, &m.certificate)
        .await
        .unwrap();
    assert!(p.new);
    ih
}

/// The HTTP status of a refusal.
pub fn status_of(e: &ClientError) -> Option<u16> {
    match e {
        ClientError::Http { status, .. } => Some(*status),
        _ => None,
    }
}
