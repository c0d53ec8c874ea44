"""Login throttling: django-axes' lockout check, for sign-ins that come from a request."""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend


class LockoutBackend(AxesStandaloneBackend):
    """Refuse a sign-in while its username and client address are locked out (settings
    AXES_*). Every web sign-in (the login page, the admin's) passes its request and is
    checked. authenticate() without a request (management commands, a test client's
    login()) has no client address to throttle and is left to ModelBackend, where
    axes' own backend would raise."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
