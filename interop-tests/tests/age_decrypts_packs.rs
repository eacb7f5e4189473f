//! The packs and the manifest of a snapshot are standard age v1 files: the reference `age`
//! tool decrypts every one of them with the organisation's recovery identity (made by the
//! real `age-keygen`) and with the machine's own identity, and refuses a tampered pack.

use std::fs;
use std::path::Path;

use swarmbak_format::manifest::{unseal, Manifest};
use swarmbak_interop_tests::{age_public_key, require_tool, Cmd};

const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

fn age_decrypt(identity: &Path, file: &Path) -> Cmd {
    Cmd::new("age").arg("-d").arg("-i").arg(identity).arg(file)
}

#[test]
fn age_decrypts_packs() {
    require_tool("age");
    require_tool("age-keygen");

    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();

    // Data: an ~8 MiB office tree and one loose file, both seeded as paths of one snapshot.
    // The loose file is 20 MiB of incompressible bytes, so the snapshot holds more than one
    // pack (packs close at 16 MiB) and "every pack" means more than one.
    let tree = t.join("office");
    let stats = swarmbak_gentree::office(&tree, 8 << 20, 1).unwrap();
    assert!(stats.files > 10, "gentree made too few files: {stats:?}");
    let loose = t.join("camera.raw");
    fs::write(&loose, swarmbak_gentree::Rng::new(1).bytes(20 << 20)).unwrap();

    // The organisation's recovery key, made by the reference tool.
    let recovery = t.join("recovery.txt");
    Cmd::new("age-keygen").arg("-o").arg(&recovery).run();
    let recovery_pub = age_public_key(&recovery);
    assert!(recovery_pub.starts_with("age1"), "{recovery_pub}");

    let home = t.join("home");
    Cmd::swarmbak(&home)
        .args(["init", "--recovery-recipient", &recovery_pub])
        .run();
    let out = Cmd::swarmbak(&home)
        .arg("seed")
        .arg(&tree)
        .arg(&loose)
        .args(["--until", "published"])
        .run();
    let ih = out.first_line();
    assert!(
        ih.len() == 40
            && ih
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
        "first line of `seed` is not an infohash: {ih:?}\n{}",
        out.stdout_str()
    );

    let inspect = Cmd::swarmbak(&home).args(["inspect", &ih, "--json"]).run();
    let meta: serde_json::Value = serde_json::from_slice(&inspect.stdout)
        .unwrap_or_else(|e| panic!("inspect --json: {e}\n{}", inspect.stdout_str()));
    let sw = &meta["swarmbak"];
    let num = |v: &serde_json::Value, k: &str| {
        v[k].as_u64()
            .unwrap_or_else(|| panic!("inspect --json has no number {k}: {meta}"))
    };
    let (k, m, stripes) = (num(sw, "k"), num(sw, "m"), num(sw, "stripes"));
    let payload_length = num(sw, "payload_length");
    let manifest_offset = num(sw, "manifest_offset");
    let manifest_length = num(sw, "manifest_length");
    let piece_length = num(&meta, "piece_length");
    assert_eq!(manifest_offset + manifest_length, payload_length);

    // Rebuild the payload from the data shards (0..k of each stripe) in the store.
    let snap = home.join("store/snapshots").join(&ih);
    let mut payload = Vec::with_capacity((stripes * k * piece_length) as usize);
    for s in 0..stripes {
        for j in 0..k {
            let piece = s * (k + m) + j;
            let shard = fs::read(snap.join("shards").join(piece.to_string()))
                .unwrap_or_else(|e| panic!("shard {piece}: {e}"));
            assert_eq!(shard.len() as u64, piece_length, "shard {piece} length");
            payload.extend_from_slice(&shard);
        }
    }
    assert!(payload.len() as u64 >= payload_length);
    payload.truncate(payload_length as usize);

    // (a) The manifest is an age file the recovery identity opens.
    let man_file = t.join("manifest.age");
    let man_ct = &payload[manifest_offset as usize..];
    assert!(
        man_ct.starts_with(AGE_HEADER),
        "manifest is not an age v1 file"
    );
    fs::write(&man_file, man_ct).unwrap();
    let man_pt = age_decrypt(&recovery, &man_file).run().stdout;
    assert!(
        man_pt.starts_with(b"SWBMANI1"),
        "decrypted manifest starts with {:?}",
        String::from_utf8_lossy(&man_pt[..man_pt.len().min(16)])
    );

    // (b) Every pack in the cached manifest's pack table opens with the recovery identity.
    let cached = unseal(&fs::read(snap.join("manifest")).unwrap()).unwrap();
    let manifest = Manifest::decode(&cached).unwrap();
    let from_age = Manifest::decode(&unseal(&man_pt).unwrap()).unwrap();
    assert_eq!(
        from_age, manifest,
        "the manifest decrypted by age differs from the cached one"
    );
    assert!(
        manifest.packs.len() >= 2,
        "expected several packs, got {:?}",
        manifest.packs
    );
    let mut end = 0u64;
    for p in &manifest.packs {
        assert_eq!(
            p.snapshot, 0,
            "a first snapshot refers only to its own packs"
        );
        assert!(p.offset >= end, "packs overlap: {:?}", manifest.packs);
        end = p.offset + p.len;
    }
    assert!(end <= manifest_offset, "a pack runs into the manifest");

    let mut pack_files = Vec::new();
    let mut plain_total = 0usize;
    for (i, p) in manifest.packs.iter().enumerate() {
        let ct = &payload[p.offset as usize..(p.offset + p.len) as usize];
        assert!(ct.starts_with(AGE_HEADER), "pack {i} is not an age v1 file");
        let f = t.join(format!("pack-{i}.age"));
        fs::write(&f, ct).unwrap();
        let pt = age_decrypt(&recovery, &f).run().stdout;
        assert!(
            pt.starts_with(b"SWBPACK1"),
            "pack {i} decrypted by age starts with {:?}",
            String::from_utf8_lossy(&pt[..pt.len().min(16)])
        );
        plain_total += pt.len();
        pack_files.push(f);
    }
    eprintln!(
        "age decrypted {} packs ({} bytes encrypted, {} bytes plaintext) and the manifest \
         ({} bytes) with the recovery identity",
        manifest.packs.len(),
        end,
        plain_total,
        man_pt.len()
    );

    // (c) The machine's own identity opens them too.
    let own = home.join("identity.txt");
    let pt = age_decrypt(&own, &pack_files[0]).run().stdout;
    assert!(pt.starts_with(b"SWBPACK1"));
    let pt = age_decrypt(&own, &man_file).run().stdout;
    assert!(pt.starts_with(b"SWBMANI1"));

    // An identity that is neither a recipient nor the owner's opens nothing.
    let stranger = t.join("stranger.txt");
    Cmd::new("age-keygen").arg("-o").arg(&stranger).run();
    age_decrypt(&stranger, &pack_files[0]).run_fail();

    // (d) One flipped byte in a pack's body: age refuses it.
    let mut bad = fs::read(&pack_files[0]).unwrap();
    let at = bad.len() - 20;
    bad[at] ^= 0x01;
    let bad_file = t.join("pack-0-flipped.age");
    fs::write(&bad_file, &bad).unwrap();
    let out = age_decrypt(&recovery, &bad_file).run_fail();
    eprintln!("age on a flipped byte: {}", out.stderr_str().trim());
}
