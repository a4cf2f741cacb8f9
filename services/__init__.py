"""zmqstream's processes and what they share, one package per job.

Roles (a process each): generator (tickers and sources), broker, recorder, plugin (inside Grafana).
Libraries: common (wire, channels, settings, sockets), sources (the plug-in contract), publish (a client).
Tools: cli (`zmqstream`), hostemu (a stand-in for Grafana), packaging (build time only).
"""
