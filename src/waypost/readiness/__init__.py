"""The production-access request (`waypost ses-request`): ``evidence`` reads what the records
show, ``request`` turns settings and evidence into the request's sections, each claim with its
source, and lists what is not yet shown."""
