"""`tetragon-oci-hook`: the OCI runtime hook that tells the agent about a container before it runs.

The runtime (runc, crun, called by containerd or CRI-O) runs the hook at `createRuntime`, after the
container's cgroup exists and before its process is exec'd; the hook sends the agent Tetragon's
`RuntimeHook` RPC and the agent puts the cgroup in the pod-scoped policies' filters before it answers,
so the container is covered from its first instruction. `annotations` reads the runtimes' CRI
annotations, `request` builds the RPC from the OCI state and config.json, `main` is the command.
"""
