"""ml-connector: Basware P2P <-> Dynamics 365 Business Central. See docs/design.md for the module map."""
