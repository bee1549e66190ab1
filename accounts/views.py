"""Sign up, sign in and sign out on the site, on Django's own auth views and forms."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.views import LoginView, RedirectURLMixin
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_post_parameters
from django.views.generic.edit import FormView

from accounts.limits import TooManyAttempts, login_blocked_check, login_failure_count, signup_attempt_check


def _too_many(request: HttpRequest, view: FormView, form: Any, exc: TooManyAttempts) -> HttpResponse:
    # The form is shown unchecked (no password is verified), with the limit's message.
    response = view.render_to_response(view.get_context_data(form=form, too_many=str(exc)), status=429)
    response["Retry-After"] = str(exc.retry_after)
    return response


class SignInView(LoginView):
    """Sign in; failed attempts are rate-limited per client and per account name."""

    template_name = "accounts/login.html"
    redirect_authenticated_user = True

    def _username(self) -> str:
        return str(self.request.POST.get("username", ""))

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            login_blocked_check(request, username=self._username())
        except TooManyAttempts as exc:
            # Refused before the password is checked.
            return _too_many(request, self, self._unchecked_form(), exc)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        try:
            login_failure_count(self.request, username=self._username())
        except TooManyAttempts as exc:
            return _too_many(self.request, self, self._unchecked_form(), exc)
        return super().form_invalid(form)

    def _unchecked_form(self) -> Any:
        # Unbound, so that showing it checks no password; the name typed is kept.
        return self.get_form_class()(self.request, initial={"username": self._username()[:150]})


@method_decorator([sensitive_post_parameters(), csrf_protect, never_cache], name="dispatch")
class SignUpView(RedirectURLMixin, FormView):
    """Create an account (Django's UserCreationForm, password validators on) and sign in."""

    form_class = UserCreationForm
    template_name = "accounts/signup.html"
    next_page = "/"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not settings.SIGNUP_OPEN:
            return render(request, "accounts/signup_closed.html", status=403)
        return super().dispatch(request, *args, **kwargs)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            signup_attempt_check(request)
        except TooManyAttempts as exc:
            form = self.get_form_class()(initial={"username": str(request.POST.get("username", ""))[:150]})
            return _too_many(request, self, form, exc)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: UserCreationForm) -> HttpResponse:
        user = form.save()
        login(self.request, user, backend="django.contrib.auth.backends.ModelBackend")
        return super().form_valid(form)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context[self.redirect_field_name] = self.get_redirect_url()
        return context
