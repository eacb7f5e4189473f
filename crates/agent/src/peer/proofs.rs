//! A connection's part in proofs of possession (swarm.md §14): after authentication
//! every `sb_machine` message is tagged with the session key; a holder sends its held
//! statements and answers challenges; a checker challenges what a holder states and
//! records the outcome in the engine's [`Possession`](crate::possession::Possession).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha1::{Digest, Sha1};
use swarmbak_trust::{possession_digest, HeldStatement, PublicKey};
use swarmbak_wire::{Answer, Bitfield, Challenge, MachineMessage, SB_MACHINE};

use super::{Actions, Driver, End};
use crate::auth::TagError;
use crate::possession::{self, BLOCK};

/// Answers per `response` message (wire.md: at most 4 blocks or 8 digests).
const BLOCKS_PER_RESPONSE: usize = 4;
const DIGESTS_PER_RESPONSE: usize = 8;
/// How long a checker waits before challenging again a holder that was busy or did not
/// answer in time, when it gave no `retry`.
const AFTER_UNANSWERED: Duration = Duration::from_secs(15);

/// Our challenge to the peer, until every answer is in.
pub(super) struct Asking {
    id: u32,
    challenge: Challenge,
    nonce: Option<[u8; 32]>,
    /// The statement the challenge was drawn from.
    from: Arc<Bitfield>,
    answers: Vec<Option<Answer>>,
    deadline: Instant,
}

impl Driver {
    /// Sends a tagged `sb_machine` message (after authentication only).
    pub(super) fn send_tagged(&mut self, m: MachineMessage) -> Actions {
        let Some(tg) = self.tagged.as_mut() else {
            return Vec::new();
        };
        let payload = tg.seal(&m);
        self.log_tagged("sent", m.kind(), payload.len());
        self.session
            .extended(Instant::now(), SB_MACHINE, Bytes::from(payload))
    }

    /// A tagged message from the peer: its tag and number are checked before anything
    /// in it is read (a bad one closes the connection without a ban: it may have been
    /// forged on the path).
    pub(super) async fn on_tagged(&mut self, payload: &[u8]) -> Result<Actions, End> {
        let Some(tg) = self.tagged.as_mut() else {
            return Ok(Vec::new());
        };
        let msg = tg.open(payload).map_err(|e| match e {
            TagError::Forged(why) => End::Closed(format!("sb_machine: {why}")),
            TagError::Malformed(why) => End::Banned(format!("sb_machine: {why}")),
        })?;
        self.log_tagged("received", msg.kind(), payload.len());
        match msg {
            MachineMessage::Held { statement } => self.on_statement(&statement),
            MachineMessage::Challenge { id, nonce, entries } => {
                self.answer(id, nonce, entries).await
            }
            MachineMessage::Response { id, index, answers } => {
                self.on_response(id, index, answers).await
            }
            MachineMessage::Refuse { id, why, retry } => Ok(self.on_refuse(id, why, retry)),
            MachineMessage::Verdict { id: _, ok, bad } => {
                if !ok {
                    eprintln!(
                        "swarmbak: {} says {} of the shards of {} it checked here did not verify (entries {bad:?}); check this disk",
                        self.addr,
                        bad.len().max(1),
                        self.t.ih
                    );
                }
                Ok(Vec::new())
            }
            MachineMessage::Record { record, cert } => Ok(self.on_record(&record, &cert)),
            // Later versions' messages are ignored.
            MachineMessage::Unknown(_) => Ok(Vec::new()),
            m => Err(End::Banned(format!(
                "sb_machine message type {} after authentication",
                m.kind()
            ))),
        }
    }

    /// A member sent the owner's signed publish record: kept when we have none and it
    /// verifies (a record that does not is ignored: the member may hold one of a machine
    /// revoked since, and proves nothing either way).
    fn on_record(&mut self, record: &[u8], cert: &[u8]) -> Actions {
        if let Some(p) = self.t.proofs() {
            let id = p.identity.clone();
            self.t.learn_record(&id, record, cert);
        }
        Vec::new()
    }

    /// `SWARMBAK_WIRE_LOG`: each tagged message's type and size (the proofs' bandwidth,
    /// tools/bench-proofs).
    fn log_tagged(&self, dir: &str, kind: i64, bytes: usize) {
        if super::wire_log_on() {
            super::wire_log(serde_json::json!({
                "event": "sb_machine",
                "peer": self.addr.to_string(),
                "infohash": hex::encode(self.t.ih.0),
                "dir": dir,
                "type": kind,
                "bytes": bytes,
            }));
        }
    }

    /// The authenticated holder's key, if the peer is one whose claims we count.
    pub(super) fn counted_holder(&self) -> Option<PublicKey> {
        self.t.proofs()?;
        let g = self.t.inner();
        let v = g.peers.get(&self.key)?;
        // A holder (its certificate's placement key) that is not the owner.
        let m = v.machine.as_ref()?;
        if self.t.owner() == Some(m) {
            return None;
        }
        v.member
    }

    /// A held statement from the peer: checked against the key it authenticated with.
    fn on_statement(&mut self, envelope: &[u8]) -> Result<Actions, End> {
        let Some(holder) = self.counted_holder() else {
            return Ok(Vec::new());
        };
        let s = HeldStatement::verify(envelope, &holder)
            .map_err(|e| End::Banned(format!("a held statement that does not verify: {e}")))?;
        if s.infohash != self.t.ih.0 || s.pieces != self.t.num_pieces() {
            return Err(End::Banned("a held statement for another snapshot".into()));
        }
        if let Some(p) = self.t.proofs() {
            p.possession.on_statement(holder, self.t.ih, &s);
        }
        self.t.wanted_is_stale();
        Ok(self.maybe_challenge(Instant::now()))
    }

    /// Timer duty: our statement when it changed, a challenge that timed out, a round
    /// that is due.
    pub(super) fn proof_tick(&mut self, now: Instant) -> Actions {
        let mut out = Vec::new();
        if self.tagged.is_some() && self.t.states() {
            if let Some((v, envelope)) = self.t.statement() {
                if v != self.sent_statement {
                    self.sent_statement = v;
                    out.extend(self.send_tagged(MachineMessage::Held {
                        statement: envelope.to_vec(),
                    }));
                }
            }
        }
        out.extend(self.maybe_challenge(now));
        out
    }

    /// Challenges the peer when a round is due and none is under way.
    fn maybe_challenge(&mut self, now: Instant) -> Actions {
        let Some(holder) = self.counted_holder() else {
            return Vec::new();
        };
        let Some(p) = self.t.proofs().cloned() else {
            return Vec::new();
        };
        if self.t.inner().role == crate::torrent::Role::Fetch {
            // A restore counts nobody: it does not spend holders' budgets.
            return Vec::new();
        }
        let ih = self.t.ih;
        if let Some(a) = &self.asking {
            if now < a.deadline {
                return Vec::new();
            }
            // No (complete) answer in time: nothing changes, the same blocks next time.
            if let Some(a) = self.asking.take() {
                p.possession.unanswered(&holder, &ih, a.challenge);
            }
            self.challenge_after = now + AFTER_UNANSWERED;
        }
        if now < self.challenge_after || !p.possession.due(&holder, &ih) {
            return Vec::new();
        }
        let Some(stated) = p.possession.stated(&holder, &ih) else {
            return Vec::new();
        };
        let ours = self.t.have();
        let blocks = (self.t.meta.layout.shard_size as u32 / BLOCK).max(1);
        let mut rng = rand::rngs::OsRng;
        let retry = p
            .possession
            .take_retry(&holder, &ih)
            .filter(|c| pieces_of(c).iter().all(|&q| stated.get(q)));
        let planned = match retry {
            Some(c @ Challenge::Digest(_)) => {
                let mut nonce = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rng, &mut nonce);
                Some((c, Some(nonce)))
            }
            Some(c) => Some((c, None)),
            None => {
                let unproven = p.possession.unproven(&holder, &ih);
                possession::plan(
                    &stated,
                    &unproven,
                    &ours,
                    self.t.roots().is_some(),
                    blocks,
                    &mut rng,
                )
            }
        };
        let Some((challenge, nonce)) = planned else {
            return Vec::new();
        };
        self.next_challenge = self.next_challenge.wrapping_add(1);
        let id = self.next_challenge;
        let n = challenge.len();
        p.possession.asking(&holder, &ih);
        let deadline = now + Duration::from_secs(possession::deadline_secs(&challenge));
        let out = self.send_tagged(MachineMessage::Challenge {
            id,
            nonce,
            entries: challenge.clone(),
        });
        self.asking = Some(Asking {
            id,
            challenge,
            nonce,
            from: stated,
            answers: vec![None; n],
            deadline,
        });
        out
    }

    /// Answers a challenge (we are the holder), within our budget.
    async fn answer(
        &mut self,
        id: u32,
        nonce: Option<[u8; 32]>,
        entries: Challenge,
    ) -> Result<Actions, End> {
        let refuse = |why: u8, retry: Option<u32>| MachineMessage::Refuse { id, why, retry };
        let (Some(p), Some(checker)) = (self.t.proofs().cloned(), self.member_key) else {
            return Ok(Vec::new());
        };
        let have = self.t.have();
        let pieces = pieces_of(&entries);
        if !self.t.states() || pieces.iter().any(|&q| !have.get(q)) {
            return Ok(self.send_tagged(refuse(1, None)));
        }
        // The budget counts the bytes the proof is about (the blocks answered, the ranges
        // digested), not the whole shards read to compute Merkle paths (swarm.md §14.3).
        let bytes = possession::proven_bytes(&entries);
        if let Err(retry) = p.possession.spend(&checker, bytes, self.t.held_bytes()) {
            return Ok(self.send_tagged(refuse(2, Some(retry))));
        }
        let mut shards = std::collections::HashMap::new();
        for &q in &pieces {
            match self.t.read_shard_from_disk(q).await {
                Some(b) => {
                    shards.insert(q, b);
                }
                None => {
                    eprintln!(
                        "swarmbak: shard {q} of {} is no longer on this disk; a proof asked for it",
                        self.t.ih
                    );
                    return Ok(self.send_tagged(refuse(1, None)));
                }
            }
        }
        let block_of = |shard: &Bytes, b: u32, n: u32| -> Option<Bytes> {
            let start = b as usize * BLOCK as usize;
            let end = start + n as usize * BLOCK as usize;
            (end <= shard.len()).then(|| shard.slice(start..end))
        };
        let mut answers = Vec::new();
        match &entries {
            Challenge::Blocks(e) => {
                let roots = self.t.roots().is_some();
                for &(q, b) in e {
                    let shard = &shards[&q];
                    let Some(data) = block_of(shard, b, 1) else {
                        return Err(End::Banned("a challenge for a block past the shard".into()));
                    };
                    let path = if roots {
                        swarmbak_core::merkle::proof(shard, b as usize)
                    } else {
                        Vec::new()
                    };
                    answers.push(Answer::Block {
                        data: data.to_vec(),
                        path,
                    });
                }
            }
            Challenge::Digest(e) => {
                let Some(nonce) = nonce else {
                    return Err(End::Banned("a digest challenge without a nonce".into()));
                };
                let me = p.identity.key.public();
                for &(q, first, count) in e {
                    let Some(range) = block_of(&shards[&q], first, count) else {
                        return Err(End::Banned("a challenge for a range past the shard".into()));
                    };
                    answers.push(Answer::Digest(possession_digest(
                        &nonce,
                        &self.t.ih.0,
                        &me,
                        q,
                        first,
                        count,
                        &[&range],
                    )));
                }
            }
        }
        let per = match entries {
            Challenge::Blocks(_) => BLOCKS_PER_RESPONSE,
            Challenge::Digest(_) => DIGESTS_PER_RESPONSE,
        };
        let mut out = Vec::new();
        let mut index = 0u32;
        let mut rest = answers.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<Answer> = rest.by_ref().take(per).collect();
            let n = chunk.len() as u32;
            out.extend(self.send_tagged(MachineMessage::Response {
                id,
                index,
                answers: chunk,
            }));
            index += n;
        }
        Ok(out)
    }

    /// Answers to our challenge; once all are in, the round is judged.
    async fn on_response(
        &mut self,
        id: u32,
        index: u32,
        answers: Vec<Answer>,
    ) -> Result<Actions, End> {
        let Some(a) = self.asking.as_mut().filter(|a| a.id == id) else {
            // A late answer to a round that timed out: ignored.
            return Ok(Vec::new());
        };
        for (i, ans) in answers.into_iter().enumerate() {
            let slot = (index as usize)
                .checked_add(i)
                .and_then(|j| a.answers.get_mut(j));
            match slot {
                Some(s) if s.is_none() => *s = Some(ans),
                _ => {
                    return Ok(self
                        .judge(Err("an answer that does not fit the challenge".into()))
                        .await)
                }
            }
        }
        if a.answers.iter().any(Option::is_none) {
            return Ok(Vec::new());
        }
        let verdict = match self.verify().await {
            Some(v) => v,
            None => {
                // We cannot judge (our own copy is gone): nothing changes.
                if let (Some(a), Some(holder), Some(p)) =
                    (self.asking.take(), self.member_key, self.t.proofs())
                {
                    p.possession.unanswered(&holder, &self.t.ih, a.challenge);
                }
                return Ok(Vec::new());
            }
        };
        Ok(self.judge(verdict).await)
    }

    /// Checks the complete answers to our challenge: each failed entry's index, or why
    /// the answers are wrong as a whole; `None` when we cannot judge them (our own copy
    /// of a shard asked for a digest can no longer be read).
    async fn verify(&self) -> Option<Result<Vec<u32>, String>> {
        let a = self.asking.as_ref()?;
        let holder = self.member_key?;
        self.verify_answers(a, holder).await
    }

    async fn verify_answers(
        &self,
        a: &Asking,
        holder: PublicKey,
    ) -> Option<Result<Vec<u32>, String>> {
        let answers: Vec<&Answer> = a.answers.iter().flatten().collect();
        let mut bad = Vec::new();
        match &a.challenge {
            Challenge::Digest(e) => {
                let Some(nonce) = a.nonce else {
                    return Some(Err("a digest challenge without a nonce".into()));
                };
                for (i, (&(q, first, count), ans)) in e.iter().zip(&answers).enumerate() {
                    let Answer::Digest(d) = ans else {
                        bad.push(i as u32);
                        continue;
                    };
                    let ours = self
                        .t
                        .read_block(&self.cache, q, first * BLOCK, count * BLOCK)
                        .await?;
                    let want =
                        possession_digest(&nonce, &self.t.ih.0, &holder, q, first, count, &[&ours]);
                    if &want != d {
                        bad.push(i as u32);
                    }
                }
            }
            Challenge::Blocks(e) => {
                let blocks = (self.t.meta.layout.shard_size as u32 / BLOCK).max(1) as usize;
                if let Some(roots) = self.t.roots() {
                    for (i, (&(q, b), ans)) in e.iter().zip(&answers).enumerate() {
                        let ok = match (ans, roots.get(q as usize)) {
                            (Answer::Block { data, path }, Some(root)) => {
                                swarmbak_core::merkle::verify(root, blocks, b as usize, data, path)
                            }
                            _ => false,
                        };
                        if !ok {
                            bad.push(i as u32);
                        }
                    }
                } else {
                    // Format 1: the whole shard, in order, against its SHA-1.
                    let q = e.first().map(|&(q, _)| q)?;
                    let whole = e.len() == blocks
                        && e.iter()
                            .enumerate()
                            .all(|(i, &(p, b))| p == q && b as usize == i);
                    if !whole {
                        // Not a challenge we plan: cannot be judged.
                        return None;
                    }
                    let mut h = Sha1::new();
                    for ans in &answers {
                        match ans {
                            Answer::Block { data, .. } if data.len() == BLOCK as usize => {
                                h.update(data)
                            }
                            _ => return Some(Ok((0..e.len() as u32).collect())),
                        }
                    }
                    let ok = self
                        .t
                        .meta
                        .hashes
                        .get(q as usize)
                        .is_some_and(|want| h.finalize()[..] == want[..]);
                    if !ok {
                        bad = (0..e.len() as u32).collect();
                    }
                }
            }
        }
        Some(Ok(bad))
    }

    /// Records a round's outcome and tells the holder.
    async fn judge(&mut self, verdict: Result<Vec<u32>, String>) -> Actions {
        let (Some(a), Some(holder), Some(p)) = (
            self.asking.take(),
            self.member_key,
            self.t.proofs().cloned(),
        ) else {
            return Vec::new();
        };
        let ih = self.t.ih;
        let (ok, bad) = match verdict {
            Ok(bad) if bad.is_empty() => {
                p.possession.passed(holder, ih, &a.challenge, a.from);
                (true, bad)
            }
            Ok(bad) => {
                let why = format!(
                    "{} of {} answers did not verify",
                    bad.len(),
                    a.answers.len()
                );
                self.failed_proof(&p.possession, holder, &a.challenge, &why);
                (false, bad)
            }
            Err(why) => {
                self.failed_proof(&p.possession, holder, &a.challenge, &why);
                (false, Vec::new())
            }
        };
        self.t.wanted_is_stale();
        self.send_tagged(MachineMessage::Verdict { id: a.id, ok, bad })
    }

    fn failed_proof(
        &self,
        possession: &possession::Possession,
        holder: PublicKey,
        c: &Challenge,
        why: &str,
    ) {
        eprintln!(
            "swarmbak: {} ({}) failed a proof of possession of {}: {why}; its copies no longer count",
            self.member_name.as_deref().unwrap_or("a machine"),
            self.addr,
            self.t.ih
        );
        possession.failed(holder, self.t.ih, c, why);
    }

    /// The holder refused our challenge: a shard it still states is missing (a failure),
    /// or it is busy (nothing changes; asked again later).
    fn on_refuse(&mut self, id: u32, why: u8, retry: Option<u32>) -> Actions {
        let Some(a) = self.asking.take_if(|a| a.id == id) else {
            return Vec::new();
        };
        let (Some(holder), Some(p)) = (self.member_key, self.t.proofs().cloned()) else {
            return Vec::new();
        };
        let stated = p.possession.stated(&holder, &self.t.ih);
        let still = pieces_of(&a.challenge)
            .iter()
            .any(|&q| stated.as_ref().is_some_and(|s| s.get(q)));
        if why == 1 && still {
            // Messages are ordered: an honest holder withdraws a shard (a new statement)
            // before it refuses a challenge for it.
            let why = "it says it lacks a shard it still states";
            self.failed_proof(&p.possession, holder, &a.challenge, why);
            self.t.wanted_is_stale();
            return self.send_tagged(MachineMessage::Verdict {
                id: a.id,
                ok: false,
                bad: Vec::new(),
            });
        }
        if why == 2 {
            p.possession.refused(holder, self.t.ih, a.challenge);
            self.t.wanted_is_stale();
        } else {
            p.possession.unanswered(&holder, &self.t.ih, a.challenge);
        }
        let wait = retry.map_or(AFTER_UNANSWERED, |s| Duration::from_secs(u64::from(s)));
        self.challenge_after = Instant::now() + wait;
        Vec::new()
    }
}

/// The distinct shards a challenge names.
fn pieces_of(c: &Challenge) -> Vec<u32> {
    let mut v: Vec<u32> = match c {
        Challenge::Blocks(e) => e.iter().map(|&(p, _)| p).collect(),
        Challenge::Digest(e) => e.iter().map(|&(p, _, _)| p).collect(),
    };
    v.sort_unstable();
    v.dedup();
    v
}
