//! The client commands: docker's, talking to the daemon at `-H` / `BERTH_HOST`.

use std::process::ExitCode;

use clap::Subcommand;

use crate::containers::{
    self, AttachArgs, CreateArgs, InspectArgs, KillArgs, LogsArgs, NamesArgs, PsArgs, RmArgs,
    RunArgs, StartArgs, StopArgs,
};
use crate::http::{Client, Host};
use crate::images::{self, ImagesArgs, ImportArgs, LoadArgs, RmiArgs, SaveArgs, TagArgs};
use crate::ops::{self, PauseArgs, PortArgs, RenameArgs, StatsArgs, TopArgs, UpdateArgs};
use crate::registry::{self, LoginArgs, LogoutArgs, PullArgs, PushArgs};
use crate::system::{self, FormatArgs};
use crate::volumes::{self, VolumeCommand};

#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Show the berth version information
    Version(FormatArgs),
    /// Display system-wide information
    Info(FormatArgs),
    /// List images
    Images(ImagesArgs),
    /// Import the contents from a tarball to create a filesystem image
    Import(ImportArgs),
    /// Load an image from a tar archive or STDIN
    Load(LoadArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default)
    Save(SaveArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Log in to a registry (credentials kept in Docker's config.json)
    Login(LoginArgs),
    /// Log out from a registry
    Logout(LogoutArgs),
    /// List containers
    Ps(PsArgs),
    /// Create a new container
    Create(CreateArgs),
    /// Create and run a new container from an image
    Run(RunArgs),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Attach local standard input, output, and error streams to a running container
    Attach(AttachArgs),
    /// Execute a command in a running container
    Exec(crate::exec::ExecArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(NamesArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// Return low-level information on containers or images
    Inspect(InspectArgs),
    /// Display the running processes of a container (UID in the container, HOST-UID on the host)
    Top(TopArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(StatsArgs),
    /// Get real time events from the server
    Events(crate::events::EventsArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// Pause all processes within one or more containers
    Pause(PauseArgs),
    /// Unpause all processes within one or more containers
    Unpause(PauseArgs),
    /// Update configuration of one or more containers
    Update(UpdateArgs),
    /// List port mappings or a specific mapping for the container
    Port(PortArgs),
    /// Manage volumes
    #[command(subcommand)]
    Volume(VolumeCommand),
    #[command(flatten)]
    Files(crate::cp::FilesCommand),
}

pub fn run(host: &str, cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    let c = Client::new(Host::parse(host).map_err(anyhow::Error::msg)?);
    match cmd {
        ClientCommand::Version(a) => system::version(&c, a),
        ClientCommand::Info(a) => system::info(&c, a),
        ClientCommand::Images(a) => images::images(&c, a),
        ClientCommand::Import(a) => images::import(&c, a),
        ClientCommand::Load(a) => images::load(&c, a),
        ClientCommand::Save(a) => images::save(&c, a),
        ClientCommand::Tag(a) => images::tag(&c, a),
        ClientCommand::Rmi(a) => images::rmi(&c, a),
        ClientCommand::Pull(a) => registry::pull(&c, a),
        ClientCommand::Push(a) => registry::push(&c, a),
        ClientCommand::Login(a) => registry::login(&c, a),
        ClientCommand::Logout(a) => registry::logout(a),
        ClientCommand::Ps(a) => containers::ps(&c, a),
        ClientCommand::Create(a) => containers::create(&c, a),
        ClientCommand::Run(a) => containers::run(&c, a),
        ClientCommand::Start(a) => containers::start(&c, a),
        ClientCommand::Attach(a) => containers::attach(&c, a),
        ClientCommand::Exec(a) => crate::exec::exec(&c, a),
        ClientCommand::Logs(a) => containers::logs(&c, a),
        ClientCommand::Wait(a) => containers::wait(&c, a),
        ClientCommand::Stop(a) => containers::stop(&c, a),
        ClientCommand::Kill(a) => containers::kill(&c, a),
        ClientCommand::Restart(a) => containers::restart(&c, a),
        ClientCommand::Rm(a) => containers::rm(&c, a),
        ClientCommand::Inspect(a) => containers::inspect(&c, a),
        ClientCommand::Top(a) => ops::top(&c, a),
        ClientCommand::Stats(a) => ops::stats(&c, a),
        ClientCommand::Events(a) => crate::events::events(&c, a),
        ClientCommand::Rename(a) => ops::rename(&c, a),
        ClientCommand::Pause(a) => ops::pause(&c, a, "pause"),
        ClientCommand::Unpause(a) => ops::pause(&c, a, "unpause"),
        ClientCommand::Update(a) => ops::update(&c, a),
        ClientCommand::Port(a) => ops::port(&c, a),
        ClientCommand::Volume(cmd) => volumes::run(&c, cmd),
        ClientCommand::Files(cmd) => crate::cp::run(&c, cmd),
    }
}
