//! `/_ping`, `/version` and `/info`.

use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde_json::json;

use crate::body::{empty, full, json_response, Body};
use crate::error::ApiResult;
use crate::router::{version_string, Ctx, API_VERSION, MIN_API_VERSION};

pub fn ping(method: &Method) -> Response<Body> {
    let body = if method == Method::HEAD {
        empty()
    } else {
        full("OK")
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert("Pragma", HeaderValue::from_static("no-cache"));
    h.insert("Builder-Version", HeaderValue::from_static("1"));
    resp
}

fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn os_release() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (field("PRETTY_NAME"), field("VERSION_ID"))
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// "2" when /sys/fs/cgroup is a cgroup2 mount, "1" otherwise (v1 or hybrid).
fn cgroup_version() -> &'static str {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => "2",
        _ => "1",
    }
}

fn arch() -> &'static str {
    std::env::consts::ARCH
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub async fn version(ctx: Ctx) -> ApiResult<Response<Body>> {
    let _ = ctx;
    let v = env!("CARGO_PKG_VERSION");
    let kernel = kernel_version();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "Platform": {"Name": "berth"},
            "Components": [{
                "Name": "Engine",
                "Version": v,
                "Details": {
                    "ApiVersion": version_string(API_VERSION),
                    "MinAPIVersion": version_string(MIN_API_VERSION),
                    "Os": "linux",
                    "Arch": go_arch(),
                    "KernelVersion": kernel,
                }
            }],
            "Version": v,
            "ApiVersion": version_string(API_VERSION),
            "MinAPIVersion": version_string(MIN_API_VERSION),
            "GitCommit": "",
            "GoVersion": "",
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": kernel,
            "BuildTime": "",
        }),
    ))
}

pub async fn info(ctx: Ctx) -> ApiResult<Response<Body>> {
    let api = &ctx.api;
    let info = api.engine.info()?;
    let (os, os_version) = os_release();
    // Docker's default seccomp profile applies unless a container opts out.
    let mut security = vec![berth_engine::seccomp::INFO_OPTION.to_string()];
    let mut warnings = vec![
        "WARNING: berth has no bridge network yet: containers get a private network namespace with loopback only (or --network=host)".to_string(),
    ];
    if let Some(maps) = &info.userns {
        security.push("name=userns".to_string());
        if let Some((uid, gid)) = maps.root() {
            warnings.push(format!(
                "userns-remap: {} (container root is host {uid}:{gid})",
                info.remap_name.clone().unwrap_or_default()
            ));
        }
    }
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "ID": api.daemon_id,
            "Containers": info.containers,
            "ContainersRunning": info.running,
            "ContainersPaused": info.paused,
            "ContainersStopped": info.stopped,
            "Images": info.images,
            "Driver": info.rootfs_driver,
            "DriverStatus": [["Backing Filesystem", "overlayfs layers, one store for every id mapping"]],
            "Plugins": {"Volume": ["local"], "Network": ["host", "null"], "Authorization": null, "Log": ["json-file"]},
            "MemoryLimit": true,
            "SwapLimit": false,
            "CpuCfsPeriod": true,
            "CpuCfsQuota": true,
            "CPUShares": true,
            "CPUSet": false,
            "PidsLimit": true,
            "IPv4Forwarding": false,
            "BridgeNfIptables": false,
            "BridgeNfIp6tables": false,
            "Debug": api.debug,
            "NFd": std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0),
            "OomKillDisable": false,
            "NGoroutines": 0,
            "SystemTime": berth_engine::timefmt::now(),
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cgroup_version(),
            "NEventsListener": 0,
            "KernelVersion": kernel_version(),
            "OperatingSystem": os,
            "OSVersion": os_version,
            "OSType": "linux",
            "Architecture": arch(),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": {"AllowNondistributableArtifactsCIDRs": null, "AllowNondistributableArtifactsHostnames": null, "InsecureRegistryCIDRs": ["127.0.0.0/8"], "IndexConfigs": {}, "Mirrors": null},
            "NCPU": ncpu,
            "MemTotal": mem_total(),
            "GenericResources": null,
            "DockerRootDir": info.data_root,
            "HttpProxy": "",
            "HttpsProxy": "",
            "NoProxy": "",
            "Name": hostname,
            "Labels": [],
            "ExperimentalBuild": false,
            "ServerVersion": env!("CARGO_PKG_VERSION"),
            "Runtimes": {"berth": {"path": "berth-runtime"}},
            "DefaultRuntime": "berth",
            "Swarm": {"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null},
            "LiveRestoreEnabled": false,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": {"ID": ""},
            "RuncCommit": {"ID": ""},
            "InitCommit": {"ID": ""},
            "SecurityOptions": security,
            "Warnings": warnings,
        }),
    ))
}
