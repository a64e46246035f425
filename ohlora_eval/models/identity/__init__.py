"""Identity models (the ``identity`` plug point): faces -> descriptors whose distance says
whether two faces are the same person (``pipeline/protocols.IdentityModel``)."""
