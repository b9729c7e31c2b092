//! A full disk: the bookie turns read-only, refuses adds with READ_ONLY, keeps every
//! acknowledged entry readable, says why in GetBookieInfo, and takes adds again once space
//! returns. The disk is a small tmpfs mounted for the test, which needs root; elsewhere the
//! test says so and does nothing.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{add, check_all, entry, small_config, start};
use magnetar_proto::bookie::{AddRequest, ErrorCode};

struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[tokio::test]
async fn full_disk_turns_the_bookie_read_only_until_space_returns() {
    let Some(disk) = Tmpfs::mount(64) else {
        eprintln!("SKIPPED: mounting a tmpfs needs root; the disk-full test did not run");
        return;
    };
    let data_dir = disk.dir.path().join("bookie");
    let mut config = small_config(&data_dir);
    config.min_free_space_bytes = 16 * 1024 * 1024;
    config.disk_check_interval = Duration::from_millis(50);
    let (bookie, client) = start(config).await;
    common::add_all(&client, 1, 200, 1000).await;

    // Fill the disk to under the minimum.
    let filler = disk.dir.path().join("filler");
    let (free, _) = magnetar_bookie::disk::disk_space(disk.dir.path()).expect("statvfs");
    let fill = free.saturating_sub(8 * 1024 * 1024);
    std::fs::write(&filler, vec![0u8; fill as usize]).expect("fill the disk");

    let deadline = Instant::now() + Duration::from_secs(10);
    let info = loop {
        let info = client.info().await.expect("info");
        if info.read_only {
            break info;
        }
        assert!(
            Instant::now() < deadline,
            "the bookie never noticed the full disk"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        info.read_only_reason.contains("disk full"),
        "{}",
        info.read_only_reason
    );

    let refused = add(
        &client,
        AddRequest {
            entries: vec![entry(1, 200, 1000)],
            ..AddRequest::default()
        },
    )
    .await;
    assert_eq!(
        refused[0].code,
        ErrorCode::ReadOnly as i32,
        "{}",
        refused[0].message
    );
    check_all(&client, 1, 200, 1000).await;

    std::fs::remove_file(&filler).expect("free the disk");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.info().await.expect("info").read_only {
        assert!(
            Instant::now() < deadline,
            "the bookie never noticed space returning"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted = add(
        &client,
        AddRequest {
            entries: vec![entry(1, 200, 1000)],
            ..AddRequest::default()
        },
    )
    .await;
    assert_eq!(
        accepted[0].code,
        ErrorCode::Ok as i32,
        "{}",
        accepted[0].message
    );
    check_all(&client, 1, 201, 1000).await;
    bookie.shutdown().await.expect("clean shutdown");
}
