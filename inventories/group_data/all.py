"""Organisation-wide settings for every inventory in this directory.

Only what differs from the roles' defaults belongs here; the defaults and what
each key means are in the README's configuration reference
(`llmhost config reference`). Examples:

    residency_allowed_regions = ["gb", "ie", "nl", "de"]   # a narrower policy
    base_http_proxy = "http://egress.internal.example:3128"
    base_ntp_servers = ["ntp1.internal.example", "ntp2.internal.example"]
"""
