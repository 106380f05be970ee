"""The device relay (issue 22, docs/relay.md): mail from scanners, cameras and sensors, forwarded
to the people listed in its body with each attachment replaced by an expiring, revocable link."""
