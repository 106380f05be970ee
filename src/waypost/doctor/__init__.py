"""`waypost doctor`: checks the live sending and receiving setup (DNS through the configured
resolver, and in SES mode the SES v2 API) and says, for each finding, what was found, why it
matters and the exact record or setting that fixes it.

``results`` holds the report types, ``spf`` and ``records`` the DNS record readers,
``dns_checks``/``tls`` the DNS and certificate checks, ``ses`` the SES account adapter (the only
module here that talks to AWS), ``runner`` picks the checks for a configuration, and ``history``
records each run and raises the drift alarm.
"""
