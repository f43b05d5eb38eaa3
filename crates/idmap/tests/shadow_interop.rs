//! berth and shadow's `usermod --add-subuids` editing one subuid file at once (on a
//! temporary copy, through `usermod --prefix`): neither loses the other's lines.

use std::fs;
use std::process::Command;

use berth_idmap::SubIdFile;

#[test]
fn berth_and_usermod_take_turns() {
    berth_testkit::require_root();
    let root = berth_testkit::tempdir("berth-idmap-shadow");
    let etc = root.path().join("etc");
    fs::create_dir(&etc).unwrap();
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(etc.join("group"), "root:x:0:\nalice:x:1000:\n").unwrap();
    fs::write(
        etc.join("shadow"),
        "root:*:20000:0:99999:7:::\nalice:!:20000:0:99999:7:::\n",
    )
    .unwrap();
    fs::write(etc.join("gshadow"), "root:*::\nalice:!::\n").unwrap();
    fs::write(etc.join("subuid"), "# kept\n").unwrap();
    fs::write(etc.join("subgid"), "").unwrap();
    let subuid = etc.join("subuid");

    const ROUNDS: u32 = 12;
    let admin = {
        let root = root.path().to_path_buf();
        std::thread::spawn(move || {
            for i in 0..ROUNDS {
                let range = format!("{}-{}", 100_000 + i * 10, 100_000 + i * 10 + 9);
                // usermod does not wait for a lock it cannot take: retry, as an admin would.
                let mut tries = 0;
                loop {
                    let out = Command::new("usermod")
                        .arg("--prefix")
                        .arg(&root)
                        .args(["--add-subuids", &range, "alice"])
                        .output()
                        .expect("run usermod");
                    if out.status.success() {
                        break;
                    }
                    tries += 1;
                    assert!(
                        tries < 500,
                        "usermod keeps failing: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        })
    };
    for i in 0..ROUNDS {
        SubIdFile::update(&subuid, |f| {
            f.add(&format!("berth{i}"), 1_000_000 + i * 100, 100)?;
            Ok(((), true))
        })
        .unwrap();
    }
    admin.join().unwrap();

    let f = SubIdFile::read(&subuid).unwrap();
    assert!(f.bad_lines().is_empty(), "{:?}", f.bad_lines());
    let alice = f.entries().iter().filter(|e| e.owner == "alice").count();
    let berth = f
        .entries()
        .iter()
        .filter(|e| e.owner.starts_with("berth"))
        .count();
    assert_eq!(
        (alice, berth),
        (ROUNDS as usize, ROUNDS as usize),
        "lost updates:\n{}",
        String::from_utf8_lossy(&f.to_bytes())
    );
    assert!(!etc.join("subuid.lock").exists());
}
