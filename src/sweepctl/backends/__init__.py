"""How a sweep's rows get run: one `Backend` per engine, chosen by name in one place.

    backend = backends.get("ray")                 # or backends.of_launch(launch.json's record)
    preview = backend.preflight(csv_path, backend.options(request), settings)
    backend.start(preview)

Modules: base (the protocol, the registry), tmux (a session per shard, here or on a pod over SSH),
ray (a Ray task per row), slurm (an sbatch job array). A new engine is one module that defines
`BACKEND` and one `register(name, module)` call.
"""

from sweepctl.backends.base import (
    DEFAULT,
    Backend,
    LaunchRequest,
    RerunCommand,
    Started,
    check_request,
    get,
    names,
    of_launch,
    register,
    unregister,
)

__all__ = ["DEFAULT", "Backend", "LaunchRequest", "RerunCommand", "Started", "check_request", "get", "names", "of_launch",
           "register", "unregister"]
