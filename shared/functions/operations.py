"""Triggers of the operations flow (filled in by its issue)."""
import azure.functions as func

bp = func.Blueprint()
