"""Running as a service: systemd notification and watchdog, metrics and health over HTTP.

Nothing here polls devices or moves data; the runtime feeds these modules.
"""
