"""`waypost drill`: the feedback loop proved end to end through the real outbox.

``scenarios`` says what each test address should produce, ``simulator`` plays the mailbox
provider of the local drill (bounce, complaint, out-of-office), ``runner`` sends, waits with a
deadline and judges, ``history`` keeps each run (table ``drill_runs``).
"""
