"""Triggers of the invoices flow (filled in by its issue)."""
import azure.functions as func

bp = func.Blueprint()
