"""Accounts on the site: sign up, sign in (rate-limited), sign out, and the header that shows who is in."""
import re
from unittest import mock

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client, TestCase, override_settings

from feed.models import Feed

PASSWORD = "a-long-unusual-passphrase-42"
User = get_user_model()


# Password hashing is not what these tests prove, and the default one costs ~0.1 s per sign-in
# on a busy machine: a fast hasher keeps the many sign-ins of the limit tests quick.
@override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
class AccountsTestCase(TestCase):
    def setUp(self):
        # The limiter counts in the cache, which outlives a test.
        cache.clear()

    def signup(self, username="newbie", password=PASSWORD, client=None, **extra):
        data = {"username": username, "password1": password, "password2": password, **extra}
        return (client or self.client).post("/accounts/signup/", data)

    def login(self, username="ann", password=PASSWORD, client=None, address="203.0.113.9", **data):
        return (client or self.client).post(
            "/accounts/login/", {"username": username, "password": password, **data}, REMOTE_ADDR=address
        )


class SignUpTests(AccountsTestCase):
    def test_sign_up_creates_the_account_signs_in_and_goes_to_next(self):
        """A new account is created with a usable password, signed in, and sent to the safe `next`."""
        response = self.signup(next="/feeds/demo/")
        self.assertRedirects(response, "/feeds/demo/", fetch_redirect_response=False)
        user = User.objects.get(username="newbie")
        self.assertTrue(user.check_password(PASSWORD))
        self.assertFalse(user.is_staff)
        self.assertEqual(int(self.client.session["_auth_user_id"]), user.pk)

    def test_an_offsite_next_is_ignored(self):
        """`next` pointing at another site is not followed."""
        response = self.signup(next="https://evil.example/")
        self.assertRedirects(response, "/", fetch_redirect_response=False)

    def test_weak_passwords_are_refused_by_the_validators(self):
        """The settings' password validators apply: a common, numeric or short password is refused inline."""
        for password in ("password", "12345678901", "abc"):
            with self.subTest(password=password):
                response = self.signup(password=password)
                self.assertEqual(response.status_code, 200)
                self.assertContains(response, 'class="field-error"')
        self.assertFalse(User.objects.filter(username="newbie").exists())

    def test_a_taken_username_is_refused_whatever_its_case(self):
        """Usernames are unique case-insensitively."""
        User.objects.create_user("Ann", password=PASSWORD)
        response = self.signup(username="ann")
        self.assertContains(response, "already exists")
        self.assertEqual(User.objects.filter(username__iexact="ann").count(), 1)

    def test_the_page_has_labelled_fields_and_a_csrf_token(self):
        """The form's inputs have labels, and the POST carries Django's CSRF token."""
        html = self.client.get("/accounts/signup/").content.decode()
        for name in ("username", "password1", "password2"):
            self.assertRegex(html, rf'<label for="id_{name}">')
        self.assertIn('name="csrfmiddlewaretoken"', html)

    @override_settings(SIGNUP_OPEN=False)
    def test_closed_sign_up_says_so_and_creates_nothing(self):
        """With SIGNUP_OPEN off the page answers 403 with a message, a POST creates nothing, and no header links to it."""
        response = self.client.get("/accounts/signup/")
        self.assertContains(response, "Sign-up is closed", status_code=403)
        self.assertEqual(self.signup().status_code, 403)
        self.assertFalse(User.objects.filter(username="newbie").exists())
        self.assertNotIn("/accounts/signup/", self.client.get("/").content.decode())
        self.assertNotIn("/accounts/signup/", self.client.get("/accounts/login/").content.decode())

    @override_settings(SIGNUP_RATE="3/h")
    def test_sign_ups_are_rate_limited_per_client(self):
        """Past SIGNUP_RATE the client gets 429 with Retry-After, and no account is created."""
        for number in range(3):
            self.signup(username=f"user{number}", client=Client())
        response = self.signup(username="one-too-many", client=Client())
        self.assertEqual(response.status_code, 429)
        self.assertGreaterEqual(int(response["Retry-After"]), 1)
        self.assertContains(response, "Too many attempts", status_code=429)
        self.assertFalse(User.objects.filter(username="one-too-many").exists())


class SignInTests(AccountsTestCase):
    @classmethod
    def setUpTestData(cls):
        cls.ann = User.objects.create_user("ann", password=PASSWORD)

    def test_sign_in_goes_back_to_next(self):
        """The right password signs in and goes to `next`."""
        response = self.login(next="/notifications/")
        self.assertRedirects(response, "/notifications/", fetch_redirect_response=False)
        self.assertEqual(int(self.client.session["_auth_user_id"]), self.ann.pk)

    def test_a_wrong_password_is_refused_inline(self):
        """A wrong password re-shows the form with an error and signs nobody in."""
        response = self.login(password="wrong")
        self.assertContains(response, "Please enter a correct username and password")
        self.assertNotIn("_auth_user_id", self.client.session)

    def test_members_only_pages_send_a_signed_out_reader_to_sign_in_and_back(self):
        """LOGIN_URL is the site's own sign-in page; a members-only feed redirects there with `next`."""
        self.assertEqual(settings.LOGIN_URL, "accounts:login")
        Feed.objects.create(slug="club", title="Club", allow_anonymous=False)
        response = self.client.get("/feeds/club/")
        self.assertRedirects(response, "/accounts/login/?next=/feeds/club/", fetch_redirect_response=False)
        self.assertRedirects(self.client.get("/notifications/"), "/accounts/login/?next=/notifications/",
                             fetch_redirect_response=False)

    def test_failed_sign_ins_are_limited_per_client(self):
        """Past LOGIN_FAIL_RATE failures (10 a minute by default) from one address, that address is blocked:
        429 with Retry-After, even with the right password, which is then not checked."""
        for number in range(10):
            self.assertEqual(self.login(username=f"nobody{number}", password="wrong").status_code, 200)
        response = self.login(username="nobody-else", password="wrong")
        self.assertEqual(response.status_code, 429)
        self.assertGreaterEqual(int(response["Retry-After"]), 1)
        self.assertContains(response, "Too many attempts", status_code=429)
        with mock.patch("django.contrib.auth.forms.authenticate") as authenticate:
            response = self.login()
        self.assertEqual(response.status_code, 429)
        authenticate.assert_not_called()
        self.assertContains(response, 'value="ann"', status_code=429)
        self.assertNotIn("_auth_user_id", self.client.session)
        # Another address is not affected.
        self.assertEqual(self.login(address="198.51.100.7").status_code, 302)

    def test_failed_sign_ins_are_limited_per_account(self):
        """Past LOGIN_FAIL_RATE_PER_ACCOUNT failures (5 a minute by default) for one name, from any addresses,
        that account is blocked (any case of the name)."""
        for number in range(5):
            self.assertEqual(self.login(password="wrong", address=f"192.0.2.{number + 1}").status_code, 200)
        self.assertEqual(self.login(password="wrong", address="192.0.2.50").status_code, 429)
        response = self.login(username="ANN", address="192.0.2.99")
        self.assertEqual(response.status_code, 429)
        self.assertNotIn("_auth_user_id", self.client.session)
        # Another account from those addresses is not affected.
        User.objects.create_user("bob", password=PASSWORD)
        self.assertEqual(self.login(username="bob", address="192.0.2.1").status_code, 302)

    def test_successful_sign_ins_are_not_counted(self):
        """Many people signing in from one address (an office) are not limited: only failures count."""
        for _ in range(15):
            self.assertEqual(self.login(client=Client()).status_code, 302)


class SignOutAndHeaderTests(AccountsTestCase):
    @classmethod
    def setUpTestData(cls):
        cls.ann = User.objects.create_user("ann", password=PASSWORD)

    def test_header_offers_sign_in_and_sign_up_to_visitors(self):
        """Signed out, every page's header links to sign in and sign up, coming back to the page."""
        html = self.client.get("/").content.decode()
        self.assertIn('href="/accounts/login/?next=/"', html)
        self.assertIn('href="/accounts/signup/?next=/"', html)
        self.assertNotIn("Sign out", html)

    def test_header_shows_the_user_and_a_sign_out_form_with_csrf(self):
        """Signed in, the header names the user and signs out with a POST form carrying the CSRF token."""
        self.client.force_login(self.ann)
        html = self.client.get("/").content.decode()
        self.assertIn("Signed in as <strong>ann</strong>", html)
        form = re.search(r'<form class="sign-out" method="post" action="/accounts/logout/">(.*?)</form>', html, re.S)
        self.assertIsNotNone(form)
        self.assertIn('name="csrfmiddlewaretoken"', form.group(1))
        self.assertNotIn('href="/accounts/login/', html)

    def test_sign_out_is_a_post_with_csrf(self):
        """POST /accounts/logout/ with the token signs out; GET is refused; a POST without the token is refused."""
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.ann)
        self.assertEqual(client.get("/accounts/logout/").status_code, 405)
        self.assertEqual(client.post("/accounts/logout/").status_code, 403)
        self.assertIn("_auth_user_id", client.session)
        client.get("/")
        token = client.cookies["csrftoken"].value
        response = client.post("/accounts/logout/", {"csrfmiddlewaretoken": token})
        self.assertRedirects(response, "/", fetch_redirect_response=False)
        self.assertNotIn("_auth_user_id", client.session)
