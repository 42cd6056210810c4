"""The aunshare_service fixture comes from aunshare's pytest plugin (installed
with the package); nothing to set up here."""
