"""The `singinghead` subcommands, one module per command (group).

`pipeline.cli` parses the command line without importing any of these, then imports the one
module the chosen command needs: the heavy libraries (torch, open3d, demucs) load only then.
"""
