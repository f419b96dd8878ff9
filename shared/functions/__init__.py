"""Azure Functions blueprints, one per flow: thin triggers over the plain modules in shared/."""
