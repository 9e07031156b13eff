"""The monitoring UI: static HTML, CSS and JavaScript served at ``/ui`` by the API.

No build step and nothing fetched from the internet: the browser reads the same JSON
API as any client, with the API key the user enters (kept in ``sessionStorage``).
"""

from taskmill.ui.router import ui_router

__all__ = ["ui_router"]
