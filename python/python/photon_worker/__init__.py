"""Photon's Python worker: runs one replica's user code for the Rust replica process.

`python -m photon_worker discover` imports an application and prints its deployments as JSON;
`python -m photon_worker serve SOCKET` connects to the replica's Unix socket and serves one
deployment over Photon's frames (see `protocol`).
"""
