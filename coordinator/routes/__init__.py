"""HTTP routes, one small module per resource; all mounted under ``/v1`` by the app."""
