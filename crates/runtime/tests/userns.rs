//! User namespaces: the maps, host files outside the map, idmapped bind mounts.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{cid, ok_stdout, Bundle, HOST_ROOT};
use serde_json::json;

#[test]
fn uid_and_gid_maps_read_from_inside() {
    let mut b = Bundle::new("brt-maps", true);
    b.script("cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g");
    let out = ok_stdout(&b.run(&cid("maps")));
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(lines[1], ["0", "100000", "65536"], "{out}");
    assert_eq!(lines[2], ["0"]);
    assert_eq!(lines[3], ["0"]);
}

#[test]
fn several_ranges_in_a_map() {
    let mut b = Bundle::new("brt-ranges", true);
    let m = json!([
        {"containerID": 0, "hostID": HOST_ROOT, "size": 1000},
        {"containerID": 1000, "hostID": HOST_ROOT + 1000, "size": 64536}
    ]);
    b.config["linux"]["uidMappings"] = m.clone();
    b.config["linux"]["gidMappings"] = m;
    b.script("cat /proc/self/uid_map");
    let out = ok_stdout(&b.run(&cid("ranges")));
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .eq(["1000", "101000", "64536"]));
}

/// A host directory of files owned by host ids outside the map: they list as 65534, and
/// container root can neither change nor remove them.
#[test]
fn host_files_outside_the_map_are_nobody_and_protected() {
    let mut b = Bundle::new("brt-nobody", true);
    let host = b.path().join("hostlog");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("syslog"), "host data\n").unwrap();
    std::fs::set_permissions(host.join("syslog"), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::chown(host.join("syslog"), Some(104), Some(4)).unwrap();
    std::fs::write(host.join("dmesg"), "root data\n").unwrap();
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
    b.add_mount(json!({"destination": "/var/log", "type": "bind", "source": host, "options": ["rbind", "rw"]}));
    b.script(
        "ls -ln /var/log; \
         echo x >> /var/log/dmesg && echo WROTE; \
         rm -f /var/log/dmesg && echo REMOVED; \
         chown 0:0 /var/log/syslog && echo CHOWNED; \
         chmod 777 /var/log/dmesg && echo CHMODDED; \
         touch /var/log/new && echo CREATED; \
         true",
    );
    let out = ok_stdout(&b.run(&cid("nobody")));
    for l in out
        .lines()
        .filter(|l| l.contains("syslog") || l.contains("dmesg"))
    {
        let cols: Vec<&str> = l.split_whitespace().collect();
        assert_eq!((cols[2], cols[3]), ("65534", "65534"), "{l}");
    }
    for word in ["WROTE", "REMOVED", "CHOWNED", "CHMODDED", "CREATED"] {
        assert!(
            !out.contains(word),
            "container root could do {word}:\n{out}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(host.join("dmesg")).unwrap(),
        "root data\n"
    );
    let md = std::fs::metadata(host.join("syslog")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (104, 4, 0o640));
    let md = std::fs::metadata(host.join("dmesg")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (0, 0, 0o644));
    assert!(!host.join("new").exists());
}

/// An idmapped bind mount (the `idmap` option, taking the container's maps): host-root files
/// are root's inside, and what container root creates lands as host root.
#[test]
fn idmapped_bind_mount() {
    let mut b = Bundle::new("brt-idmap", true);
    let vol = b.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("owned-by-root"), "r\n").unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap();
    b.add_mount(json!({"destination": "/data", "type": "bind", "source": vol, "options": ["rbind", "idmap"]}));
    // chown needs CAP_CHOWN, which the default config does not grant.
    for set in ["bounding", "effective", "permitted"] {
        b.config["process"]["capabilities"][set]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_CHOWN"));
    }
    b.script("ls -ln /data; echo made > /data/new && echo CREATED; mkdir /data/d && chown 5:7 /data/d && echo CHOWNED");
    let out = ok_stdout(&b.run(&cid("idmap")));
    let line = out
        .lines()
        .find(|l| l.contains("owned-by-root"))
        .expect(&out);
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!((cols[2], cols[3]), ("0", "0"), "{out}");
    assert!(out.contains("CREATED") && out.contains("CHOWNED"), "{out}");
    let md = std::fs::metadata(vol.join("new")).unwrap();
    assert_eq!((md.uid(), md.gid()), (0, 0));
    let md = std::fs::metadata(vol.join("d")).unwrap();
    assert_eq!((md.uid(), md.gid()), (5, 7));
}

/// Per-mount uidMappings/gidMappings: the mount gets its own map.
#[test]
fn idmapped_bind_mount_with_its_own_mappings() {
    let mut b = Bundle::new("brt-idmap2", true);
    let vol = b.path().join("vol");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("f"), "r\n").unwrap();
    std::os::unix::fs::chown(vol.join("f"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(&vol, Some(1000), Some(1000)).unwrap();
    std::fs::set_permissions(&vol, std::fs::Permissions::from_mode(0o755)).unwrap();
    // On-disk 1000 is shown as container 0 (host 100000 in the container's map).
    let m = json!([{"containerID": 1000, "hostID": HOST_ROOT, "size": 1}]);
    b.add_mount(
        json!({"destination": "/data", "type": "bind", "source": vol, "options": ["rbind"],
                       "uidMappings": m, "gidMappings": m}),
    );
    b.script("ls -ln /data/f; echo n > /data/g && echo CREATED");
    let out = ok_stdout(&b.run(&cid("idmap2")));
    let cols: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!((cols[2], cols[3]), ("0", "0"), "{out}");
    assert!(out.contains("CREATED"), "{out}");
    let md = std::fs::metadata(vol.join("g")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1000, 1000));
}

/// A bind-mounted host file (not a directory) under a 0700 root-owned directory: the init
/// reaches it before it becomes container root, and the target is created as a file.
#[test]
fn bind_mounted_file_under_a_private_directory() {
    let mut b = Bundle::new("brt-bindfile", true);
    let f = b.path().join("hostname.txt");
    std::fs::write(&f, "from-the-host\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    b.add_mount(json!({"destination": "/etc/injected", "type": "bind", "source": f, "options": ["bind", "ro"]}));
    b.script("cat /etc/injected; [ -f /etc/injected ] && echo IS_FILE");
    let out = ok_stdout(&b.run(&cid("bindfile")));
    assert_eq!(out, "from-the-host\nIS_FILE\n", "{out}");
}
